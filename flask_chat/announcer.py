"""Presence announcements of one process: the grace before offline, and batches.

Connects and closes do not publish presence themselves; they tell their hub's
:class:`Announcer`, which

- waits out ``CHAT_PRESENCE_GRACE`` after a user's last connection closed before it
  settles them (see :mod:`flask_chat.presence`): back by then, on any instance, and
  nothing is announced, so a page navigation is neither an offline nor an online;
- collects changes for :data:`BATCH_WINDOW` and publishes one frame per channel for all
  of them (``{"type": "presence", "online": [...], "offline": [...]}``): a thousand
  members connecting at once cost each observer a few dozen frames, not a thousand. A
  user who came and went within one window is not announced at all.

Just before a batch is published it is checked against the online list (one ZMSCORE):
a change another instance has reversed since is left out, so that a batch published
late does not undo that instance's newer announcement.
"""

from __future__ import annotations

import logging
import time
from collections import deque

import gevent

from . import delivery
from .delivery import Audience
from .state import ChatState

log = logging.getLogger("flask_chat.announcer")

#: Seconds changes are collected before they are published together: short next to how
#: fast people notice, long next to a connect (a storm of them shares a few batches).
BATCH_WINDOW = 0.025

#: A pending change: online (True) or offline, who sees it if known, the user's groups
#: if known (to work out who sees it without asking the host app again).
Change = tuple[bool, Audience | None, list[int] | None]


def _note(changes: dict[int, Change], user_id: int, change: Change) -> None:
    previous = changes.get(user_id)
    if previous is not None and previous[0] != change[0]:
        del changes[user_id]  # came and went (or the reverse) unseen: nothing changed
    else:
        changes[user_id] = change


class Announcer:
    """One per hub (per app, per process)."""

    def __init__(self, state: ChatState) -> None:
        self.state = state
        self._changes: dict[int, Change] = {}
        #: Users whose last connection closed: (when their grace is over, user, groups),
        #: in closing order, which is the order of their deadlines (one grace for all).
        self._leaving: deque[tuple[float, int, list[int] | None]] = deque()
        #: Users whose grace is over, to settle in the next batch (their groups).
        self._settling: dict[int, list[int] | None] = {}
        self._waiter: gevent.Greenlet | None = None
        self._flusher: gevent.Greenlet | None = None

    def online(self, user_id: int, audience: Audience | None = None) -> None:
        """``user_id`` came online (their first live connection on any instance)."""
        _note(self._changes, user_id, (True, audience, None))
        self._schedule()

    def offline(self, user_id: int) -> None:
        """``user_id`` was taken off the online list (by the reaper)."""
        _note(self._changes, user_id, (False, None, None))
        self._schedule()

    def closed(self, user_id: int, expires: float, groups: list[int] | None) -> None:
        """``user_id``'s last live connection closed; their online entry runs out at
        ``expires`` (``time.time()``, see :meth:`Presence.release`): settle them then."""
        if expires <= time.time():
            self._settling[user_id] = groups
            self._schedule()
            return
        self._leaving.append((expires, user_id, groups))
        if self._waiter is None:
            self._waiter = gevent.spawn(self._wait_out)

    @property
    def pending(self) -> int:
        """Changes and users in their grace not yet announced (or found back)."""
        return len(self._changes) + len(self._leaving) + len(self._settling)

    def stop(self) -> None:
        """The process is going away: publish what is due now. Users still in their
        grace are left to the other instances' reapers (their entries run out)."""
        for greenlet in (self._waiter, self._flusher):
            if greenlet is not None:
                greenlet.kill(block=False)
        self._waiter = self._flusher = None
        self._flush()

    def _wait_out(self) -> None:
        try:
            while self._leaving:
                expires, user_id, groups = self._leaving[0]
                left = expires - time.time()
                if left > 0:
                    gevent.sleep(left)
                    continue
                self._leaving.popleft()
                self._settling[user_id] = groups
                self._schedule()
        finally:
            self._waiter = None

    def _schedule(self) -> None:
        if self._flusher is None:
            self._flusher = gevent.spawn(self._run)

    def _run(self) -> None:
        # One batch at a time, so that batches are published in the order they were made.
        try:
            while self._changes or self._settling:
                gevent.sleep(BATCH_WINDOW)
                self._flush()
        finally:
            self._flusher = None

    def _flush(self) -> None:
        changes, self._changes = self._changes, {}
        settling, self._settling = self._settling, {}
        if not (changes or settling):
            return
        try:
            with self.state.app.app_context():  # the host's hooks may need the app
                self._publish(changes, settling)
        except Exception:
            # Users not settled stay on the online list until a reaper takes them off.
            log.exception("flask-chat: presence announcement failed")

    def _publish(self, changes: dict[int, Change], settling: dict[int, list[int] | None]) -> None:
        state = self.state
        for user_id in state.presence.settle(list(settling)):
            _note(changes, user_id, (False, None, settling[user_id]))
        if not changes:
            return
        audiences = {
            user_id: audience or delivery.presence_audience(state, user_id, groups)
            for user_id, (_, audience, groups) in changes.items()
        }
        # Checked last, right before the publish: the smallest window for a reversal.
        online_now = set(state.presence.online_ids(changes))
        delivery.presence(
            state,
            {
                user_id: (online, audiences[user_id])
                for user_id, (online, _, _) in changes.items()
                # Else reversed since, by whoever announces that.
                if (user_id in online_now) == online
            },
        )

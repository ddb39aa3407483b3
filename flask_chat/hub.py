"""The per-process hub: one Redis subscriber, fanning events out to local websockets.

Local connections join channels (a user's own channel, their groups' channels); the
first local member of a channel subscribes Redis, the last one out unsubscribes. An
event arrives once from Redis, is framed once, and the same bytes are written to every
local socket on that channel. The hub also runs the process's periodic work: pings and
dead-peer detection, presence heartbeats and the reaper that notices dead instances.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Iterable

import gevent
from gevent.event import Event

from . import catchup, protocol
from .announcer import Announcer
from .cluster import ClusterSubscriber
from .connection import PING_FRAME, Connection
from .ids import format_id
from .metrics import METRICS
from .pubsub import Subscriber
from .state import ChatState

log = logging.getLogger("flask_chat.hub")

_MEMBERSHIP_PREFIX = b'{"type":"membership"'
_ID_START = len(protocol.MESSAGE_PREFIX)
_ID_END = _ID_START + 18

#: Seconds replayed before the subscriber's disconnect when no message had been seen yet
#: (clocks of this host and of Redis may differ a little; clients drop duplicates).
RESYNC_MARGIN = 5.0


class Hub:
    def __init__(self, state: ChatState) -> None:
        self.state = state
        self.keys = state.keys
        #: Publishes this process's presence changes, after the grace and in batches.
        self.announcer = Announcer(state)
        self.subscriber: Subscriber | ClusterSubscriber
        if state.cluster is not None:
            # One connection per master, sharded pub/sub (see cluster.py).
            self.subscriber = ClusterSubscriber(
                state.cluster, state.config.redis_url,
                f"{state.keys.prefix}:ch:{{".encode(), self.dispatch,
                on_reconnect=self._on_reconnect,
            )
        else:
            self.subscriber = Subscriber(
                state.config.redis_url, self.dispatch, on_reconnect=self._on_reconnect
            )
        self.channels: dict[bytes, set[Connection]] = {}
        self.connections: dict[str, Connection] = {}
        self.by_user: dict[int, set[Connection]] = {}
        self.draining = False
        #: The highest message id this hub has received: after a resubscribe, every
        #: connection catches up from here (ids are in publish order).
        self.last_id = b""
        self._greenlets: list[gevent.Greenlet] = []
        #: Channels whose events go to a handler instead of to sockets (the bridge's
        #: ``juggernaut``), and callbacks run when a connection ends or each heartbeat.
        self.channel_handlers: dict[bytes, Callable[[bytes], None]] = {}
        self.close_callbacks: list[Callable[[Connection], None]] = []
        self.heartbeat_callbacks: list[Callable[[], None]] = []
        #: Callbacks run when the subscriber is back and subscribed again (Redis may have
        #: restarted and lost every key: the bridge writes its roster again). They run in
        #: the subscriber's read loop: they must not block (spawn a greenlet).
        self.reconnect_callbacks: list[Callable[[], None]] = []

    def start(self) -> None:
        # Presence runs at the reaper's pace; renewals are due every few passes.
        self._renew_due = 0.0
        self._greenlets = [
            gevent.spawn(self.subscriber.run),
            gevent.spawn(self._every, self.state.config.ping_interval, self._ping),
            gevent.spawn(self._every, self.state.presence.reap_interval, self._heartbeat),
        ]

    def _every(self, interval: float, task: Callable[[], None]) -> None:
        while True:
            gevent.sleep(interval)
            try:
                task()
            except Exception:
                log.exception("flask-chat: periodic task %s failed", task.__name__)

    # -- channels --------------------------------------------------------------------

    def user_channel(self, user_id: int) -> bytes:
        return self.keys.user_channel(user_id).encode()

    def group_channel(self, group_id: int) -> bytes:
        return self.keys.group_channel(group_id).encode()

    def join(self, conn: Connection, channels: Iterable[bytes]) -> Event | None:
        """Add ``conn`` to ``channels``. Returns an event set once Redis has subscribed
        the channels that were new to this process (None: none was new)."""
        new: list[bytes] = []
        for channel in channels:
            members = self.channels.get(channel)
            if members is None:
                members = self.channels[channel] = set()
                new.append(channel)
            members.add(conn)
            conn.channels.add(channel)
        return self.subscriber.subscribe(new) if new else None

    def leave(self, conn: Connection, channels: Iterable[bytes]) -> None:
        gone: list[bytes] = []
        for channel in list(channels):
            members = self.channels.get(channel)
            conn.channels.discard(channel)
            if members is None:
                continue
            members.discard(conn)
            if not members:
                del self.channels[channel]
                gone.append(channel)
        if gone:
            self.subscriber.unsubscribe(gone)

    # -- connections -----------------------------------------------------------------

    def add(self, conn: Connection, channels: Iterable[bytes]) -> Event | None:
        """Register ``conn`` on ``channels``; returns what :meth:`join` returns."""
        self.connections[conn.id] = conn
        if conn.user_id:
            self.by_user.setdefault(conn.user_id, set()).add(conn)
        subscribed = self.join(conn, channels)
        METRICS.connections.inc()
        METRICS.connects.inc()
        return subscribed

    def remove(self, conn: Connection) -> None:
        if self.connections.pop(conn.id, None) is None:
            return
        mine = self.by_user.get(conn.user_id)
        if mine is not None:
            mine.discard(conn)
            if not mine:
                del self.by_user[conn.user_id]
        self.leave(conn, list(conn.channels))
        METRICS.connections.dec()
        for callback in self.close_callbacks:
            try:
                callback(conn)
            except Exception:
                log.exception("flask-chat: a close callback failed for %s", conn.id)

    # -- delivery ----------------------------------------------------------------------

    def handle_channel(self, channel: bytes, handler: Callable[[bytes], None]) -> None:
        """Send every event on ``channel`` to ``handler`` (for as long as the hub runs)."""
        self.channel_handlers[channel] = handler
        self.subscriber.subscribe([channel])

    def dispatch(self, channel: bytes, payload: bytes) -> None:
        """Deliver one pub/sub event: frame once, write the same bytes to every socket."""
        METRICS.events.inc()
        handler = self.channel_handlers.get(channel)
        if handler is not None:
            handler(payload)
            return
        if payload.startswith(protocol.MESSAGE_PREFIX):
            message_id = payload[_ID_START:_ID_END]
            if message_id > self.last_id:
                self.last_id = message_id
        members = self.channels.get(channel)
        if not members:
            return
        if payload.startswith(_MEMBERSHIP_PREFIX):
            self._membership(channel, payload)
        elif payload == protocol.LOGOUT:
            self._logout(members, protocol.ws_frame(payload))
            return
        frame = protocol.ws_frame(payload)
        for conn in tuple(members):
            conn.deliver(frame)
        METRICS.deliveries.inc(len(members))

    def _membership(self, channel: bytes, payload: bytes) -> None:
        import json

        event = json.loads(payload)
        group_id = int(event["group_id"])
        group = self.group_channel(group_id)
        for conn in tuple(self.channels.get(channel, ())):
            if not conn.user_id:
                continue  # an add-on's connection (the bridge's legacy ones)
            # The connection's groups also decide what a catch-up replays.
            groups: list[int] = conn.data.setdefault("groups", [])
            if event["member"]:
                self.join(conn, [group])
                if group_id not in groups:
                    groups.append(group_id)
            else:
                self.leave(conn, [group])
                if group_id in groups:
                    groups.remove(group_id)

    def _logout(self, members: set[Connection], frame: bytes) -> None:
        for conn in tuple(members):
            if conn.user_id:
                conn.write(frame)
            # Add-ons' connections on the channel (the bridge's logged-in legacy ones)
            # close too: they were the user's.
            conn.close(protocol.CLOSE_LOGGED_OUT, "logged out")

    def _on_reconnect(self, lost_at: float | None = None) -> None:
        """The subscriber is back and subscribed again: whatever was published while it
        was away reached no local socket, so every connection catches up, unasked.

        ``lost_at``: on a cluster, when the subscriptions just restored (some channels
        only) were lost. The highest id seen may come from other masters' channels, which
        kept flowing, so the catch-up starts from that time instead."""
        METRICS.hub_reconnects.inc()
        if lost_at is not None:
            position = format_id(int((lost_at - RESYNC_MARGIN) * 1000), 0)
        elif self.last_id:
            position = self.last_id.decode()
        else:
            lost = self.subscriber.disconnected_at or time.time()
            position = format_id(int((lost - RESYNC_MARGIN) * 1000), 0)
        self._greenlets.append(gevent.spawn(self._resync, position))
        for callback in self.reconnect_callbacks:
            try:
                callback()
            except Exception:
                log.exception("flask-chat: a reconnect callback failed")

    def _resync(self, position: str) -> None:
        conns = [c for c in self.connections.values() if c.user_id and not c.closed]
        for start in range(0, len(conns), self.SLICE):
            for conn in conns[start : start + self.SLICE]:
                if conn.closed:
                    continue
                try:
                    catchup.replay(self.state, conn, position)
                except Exception:
                    # Redis went away again: the next reconnect replays once more.
                    log.warning("flask-chat: catch-up after resubscribe failed for %s", conn.id,
                                exc_info=True)
            gevent.sleep(0)

    # -- periodic work ---------------------------------------------------------------

    #: Connections handled per slice of periodic work before yielding to the loop, so
    #: that 15,000 connections never stall delivery for a whole pass.
    SLICE = 500

    def _ping(self) -> None:
        # A peer that has sent nothing (not even a pong) for 2.5 intervals is dead.
        cutoff = time.monotonic() - 2.5 * self.state.config.ping_interval
        conns = tuple(self.connections.values())
        for start in range(0, len(conns), self.SLICE):
            for conn in conns[start : start + self.SLICE]:
                if conn.last_seen < cutoff:
                    conn.abort()
                else:
                    conn.write(PING_FRAME)
            gevent.sleep(0)

    def _heartbeat(self) -> None:
        presence = self.state.presence
        # Renew on the renewal interval, reap on every pass (the reaper's interval):
        # each is what its side of "offline within the TTL" needs (see presence.py).
        now = time.monotonic()
        renew = now >= self._renew_due
        if renew:
            # Due a little early, so that a pass that comes late still renews in time.
            self._renew_due = now + presence.renew_interval - presence.reap_interval / 2
            live = [(c.user_id, c.id) for c in self.connections.values() if c.user_id]
            for start in range(0, len(live), self.SLICE):
                for user_id in presence.heartbeat(live[start : start + self.SLICE]):
                    self.announcer.online(user_id)
                gevent.sleep(0)
        for user_id in presence.reap():
            self.announcer.offline(user_id)
        if renew:
            for callback in self.heartbeat_callbacks:  # at the renewal pace, as before
                callback()

    # -- shutdown --------------------------------------------------------------------

    def drain(self, timeout: float = 10.0) -> None:
        """Tell every client to reconnect elsewhere, close them, and stop (SIGTERM)."""
        self.draining = True
        frame = protocol.ws_frame(protocol.reconnect())
        for conn in tuple(self.connections.values()):
            conn.write(frame)
            conn.close(protocol.CLOSE_SERVICE_RESTART, "server restarting")
        deadline = time.monotonic() + timeout
        while self.connections and time.monotonic() < deadline:
            gevent.sleep(0.05)
        for conn in tuple(self.connections.values()):
            conn.abort()
        self.announcer.stop()
        for greenlet in self._greenlets:
            greenlet.kill(block=False)
        self.subscriber.stop()


# -- one hub per app per process -------------------------------------------------------

HubListener = Callable[[Hub], None]
_hubs: weakref.WeakKeyDictionary[ChatState, Hub] = weakref.WeakKeyDictionary()
_listeners: weakref.WeakKeyDictionary[ChatState, list[HubListener]] = weakref.WeakKeyDictionary()


def running_hub(state: ChatState) -> Hub | None:
    """This process's hub for ``state``'s app, if it was started."""
    return _hubs.get(state)


def get_hub(state: ChatState) -> Hub:
    """This process's hub for ``state``'s app, started on first use (the first
    websocket or poll, or :func:`flask_chat.server.start_hub`)."""
    hub = _hubs.get(state)
    if hub is None:
        hub = _hubs[state] = Hub(state)
        hub.start()
        for listener in _listeners.get(state, ()):
            listener(hub)
        hub.subscriber.wait_connected(5.0)
    return hub


def add_listener(state: ChatState, listener: HubListener) -> None:
    """Call ``listener(hub)`` when ``state``'s hub starts (at once if it runs)."""
    _listeners.setdefault(state, []).append(listener)
    hub = _hubs.get(state)
    if hub is not None:
        listener(hub)


def has_listeners(state: ChatState) -> bool:
    """Whether an add-on waits for the hub (so it should start with the server)."""
    return bool(_listeners.get(state))


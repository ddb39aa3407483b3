"""Long polling, ``GET /chats/poll?after=<position>``: chat.js's fallback where
websockets are blocked (a proxy that refuses the ``Upgrade``).

Each poll answers what the client missed after its position (:func:`catchup.missed`,
exactly as a websocket's catch-up) or, when there is nothing, waits up to
:data:`POLL_TIMEOUT` for the next live event of the user's and their groups' channels,
heard through the process's hub by a subscriber that lives for the request. The answer
is ``{"position": <id>, "frames": [...]}``, frames as the websocket sends them; the
client polls again from the new position at once. Sends go over ``POST
/chats/send_message``. Any instance answers any poll: the position is the whole state.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from flask import Response, current_app, g, request
from gevent.event import Event
from redis.exceptions import RedisError

from . import catchup, delivery, protocol
from .connection import Connection
from .errors import ConfigurationError
from .hub import RESYNC_MARGIN, get_hub, running_hub
from .ids import format_id, is_valid_id
from .metrics import METRICS
from .server import check_gevent_patched
from .state import ChatState, current_state
from .upgrade import origin_allowed
from .views import blueprint, json_response

#: How long a poll with nothing to say waits (below every proxy's idle timeout, and
#: below the 60 s of the example HAProxy config).
POLL_TIMEOUT = 25.0


class PollListener(Connection):
    """What the hub sees of one long poll while it waits: a member of the user's and
    groups' channels that keeps the events it is given. It has no socket, and only
    what the hub uses of a :class:`Connection` (it is never ``hub.add``-ed: no presence,
    no pings); the hub's membership events move it between group channels as they
    move a websocket."""

    __slots__ = ("events", "arrived")

    def __init__(self, user_id: int, group_ids: list[int]) -> None:
        # No Connection.__init__: it takes over a socket, and there is none.
        self.id = "poll-" + secrets.token_hex(8)
        self.user_id = user_id
        self.channels: set[bytes] = set()
        self.data: dict[str, Any] = {"groups": list(group_ids)}
        self.closed = False
        self._closing = False
        self.events: list[bytes] = []
        self.arrived = Event()

    def deliver(self, frame: bytes) -> None:
        self.write(frame)

    def write(self, frame: bytes) -> None:
        payload = _ws_payload(frame)
        if payload is not None:
            self.events.append(payload)
            self.arrived.set()

    def close(self, code: int = protocol.CLOSE_NORMAL, reason: str = "") -> None:
        self.closed = True  # logged out: the logout frame came first (hub._logout)
        self.arrived.set()

    def abort(self) -> None:
        self.close()


def _ws_payload(frame: bytes) -> bytes | None:
    """The payload of a server text frame (as the hub frames events); None for others."""
    if len(frame) < 2 or frame[0] & 0x0F != protocol.OP_TEXT:
        return None
    length = frame[1] & 0x7F
    return frame[2 + {126: 2, 127: 8}.get(length, 0) :]


def _error(status: int, code: str, message: str, **extra: Any) -> Response:
    response = json_response({"error": code, "message": message, **extra}, status)
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.get("/poll")
def poll() -> Response:
    state = current_state()
    try:
        check_gevent_patched()
    except ConfigurationError as exc:
        return json_response(exc.to_dict(), 500)
    hub = running_hub(state)
    if hub is not None and hub.draining:
        return _error(503, "draining", "Reconnect elsewhere.")
    if not origin_allowed(state.config.allowed_origins):
        METRICS.refused.labels("origin").inc()
        return _error(403, "forbidden_origin", "Cross-site poll refused.")
    user_id: int = g.chat_user_id  # the blueprint's login check answered 401 already
    after = request.args.get("after") or ""
    if after and not is_valid_id(after):
        return _error(400, "invalid_parameter", "'after' must be a message id.", field="after")
    if not after:
        # A page that shows no message yet: from a few seconds back (duplicates are
        # dropped by the client), as the bootstrap's position does.
        after = format_id(int((time.time() - RESYNC_MARGIN) * 1000), 0)
    try:
        events = _wait(state, user_id, after)
        if request.args.get("online") == "1":
            snapshot = delivery.online_snapshot(state, user_id)
            events.insert(0, protocol.online_snapshot(snapshot))
    except RedisError:
        return _error(503, "unavailable", "Try again shortly.")
    position = max([after, *(i for i in map(protocol.payload_message_id, events) if i)])
    body = b'{"position":%s,"frames":[%s]}' % (json.dumps(position).encode(),
                                                b",".join(events))
    response = current_app.response_class(body, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def _wait(state: ChatState, user_id: int, after: str) -> list[bytes]:
    """The events for one poll: what was missed after ``after``, else the live events
    of the next moment something happens (or nothing, after POLL_TIMEOUT)."""
    hub = get_hub(state)
    listener = PollListener(user_id, state.hooks.user_group_ids(user_id))
    # Listening before reading: nothing published after the read can be missed.
    hub.join(listener, [hub.user_channel(user_id)]
             + [hub.group_channel(g) for g in listener.data["groups"]])
    try:
        recovered, missed = catchup.missed(state, user_id, listener.data["groups"], after)
        if not recovered:
            return [protocol.catchup_done(False, 0)]  # the client reloads its history
        if not missed:
            deadline = time.monotonic() + POLL_TIMEOUT
            # Short waits, so that a draining instance lets its polls go at once.
            while not listener.arrived.is_set() and not hub.draining:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                listener.arrived.wait(min(left, 1.0))
            if listener.events and not listener.closed:
                # Read again: a message published while the subscription was being
                # made reached no listener, but it is in the store by now.
                recovered, missed = catchup.missed(state, user_id, listener.data["groups"],
                                                   after)
                if not recovered:
                    return [protocol.catchup_done(False, 0)]
    finally:
        hub.leave(listener, list(listener.channels))
    replayed = {protocol.payload_message_id(e) for e in missed}
    live = [e for e in listener.events if protocol.payload_message_id(e) not in replayed]
    return missed + live

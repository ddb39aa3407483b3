"""The websocket endpoint, ``/chats/ws``, and what each client frame does.

The route is declared through flask-sock (:mod:`flask_chat.upgrade`), with every
refusal (origin, login, connection cap, bad parameters) answered over HTTP before the
handshake. After the handshake flask-chat takes the socket over with its own lean
connection loop (:mod:`flask_chat.connection`): no greenlet and no thread per idle
connection, writes that never block, one framing per event however many sockets
receive it.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

import gevent
from flask import Flask, Response, current_app, g, request
from gevent.event import Event
from itsdangerous import BadSignature, URLSafeTimedSerializer
from redis.exceptions import RedisClusterException, RedisError

from . import autopipe, catchup, delivery, messaging, protocol
from .access import check_can_open, check_target
from .connection import Connection
from .conversations import ConversationKey
from .errors import ChatError, ConfigurationError, Unavailable, ValidationError
from .hub import Hub, get_hub, running_hub
from .ids import is_valid_id
from .limits import TokenBucket
from .metrics import METRICS
from .server import check_gevent_patched
from .state import ChatState, current_state
from .upgrade import check_handshake, hand_over, origin_allowed, take_socket, websocket_route
from .views import blueprint, json_response
from .windows import parse_state

log = logging.getLogger("flask_chat.websocket")

_TOKEN_SALT = "flask-chat-websocket"


def _serializer(app: Flask) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(app.secret_key or "", salt=_TOKEN_SALT)


def make_token(user_id: int) -> str:
    """A signed, short-lived websocket token for ``user_id`` (the bootstrap carries it),
    valid until it expires or the user logs out (which bumps their token generation)."""
    state = current_state()
    generation = int(state.redis.get(state.keys.token_generation(user_id)) or 0)
    return _serializer(current_app).dumps([user_id, generation])


def _token_claim(state: ChatState, token: str) -> tuple[int, int] | None:
    """The (user id, token generation) a token signs, if it is valid and not expired
    (whether the generation is still current is for Redis to say)."""
    try:
        value = _serializer(current_app).loads(token, max_age=state.config.token_max_age)
    except BadSignature:
        return None
    if not (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return None
    return value[0], value[1]


def _user_and_connections(state: ChatState) -> tuple[int | None, int]:
    """Who opens this websocket (by ``?token=`` or the session), and how many live
    connections they hold already: one Redis round trip for both."""
    token = request.args.get("token")
    if not token:
        user_id = state.hooks.current_user_id()
        return user_id, (state.presence.live_connections(user_id) if user_id else 0)
    claim = _token_claim(state, token)
    if claim is None:
        return None, 0
    user_id, generation = claim
    generation_key = state.keys.token_generation(user_id)
    connections_key = state.keys.connections(user_id)
    if state.cluster is None:
        # On the process's auto-pipelined connection: no pool checkout per connect.
        current, live = autopipe.execute(state.redis, [
            ("GET", generation_key), ("ZCOUNT", connections_key, f"({time.time()}", "+inf"),
        ])
    else:
        pipe = state.redis.pipeline(transaction=False)
        pipe.get(generation_key)
        pipe.zcount(connections_key, f"({time.time()}", "+inf")
        current, live = pipe.execute()
    for reply in (current, live):
        if isinstance(reply, Exception):
            raise reply
    # A logout since the token was made bumped the user's generation: refused.
    return (user_id if generation == int(current or 0) else None), int(live)


def _refusal(state: ChatState) -> Response | None:
    """Everything that can refuse a websocket, checked on the HTTP request before the
    handshake: an answer (4xx/5xx JSON), or None to let it through. Sets ``g.chat_ws``
    to (user id, ``after``) for the endpoint."""
    config = state.config
    try:
        check_gevent_patched()
    except ConfigurationError as exc:
        log.error("%s", exc)
        return json_response(exc.to_dict(), 500)
    hub = running_hub(state)
    if hub is not None and hub.draining:
        METRICS.refused.labels("draining").inc()
        return json_response({"error": "draining", "message": "Reconnect elsewhere."}, 503)
    if not origin_allowed(config.allowed_origins):
        METRICS.refused.labels("origin").inc()
        return json_response(
            {"error": "forbidden_origin", "message": "Cross-site websocket refused."}, 403
        )
    check_handshake()
    user_id, live = _user_and_connections(state)
    if user_id is None:
        METRICS.refused.labels("anonymous").inc()
        return json_response({"error": "not_authenticated", "message": "Log in first."}, 401)
    if live >= config.max_user_connections:
        # Counted across instances from presence; two connects racing may both pass,
        # which is fine for a limit meant to stop floods, not to count exactly.
        METRICS.refused.labels("too_many_connections").inc()
        return json_response(
            {
                "error": "too_many_connections",
                "message": f"At most {config.max_user_connections} live connections per user.",
            },
            429,
        )
    after = request.args.get("after") or None
    if after is not None and not is_valid_id(after):
        return json_response(
            {"error": "invalid_parameter", "message": "'after' must be a message id.",
             "field": "after"},
            400,
        )
    g.chat_ws = (user_id, after)
    return None


@websocket_route(blueprint, "/ws", check=lambda: _refusal(current_state()))
def websocket(ws: Any) -> None:
    state = current_state()
    config = state.config
    user_id, after = g.chat_ws
    group_ids = state.hooks.user_group_ids(user_id)
    hub = get_hub(state)

    raw = take_socket(ws)
    app = state.app
    done = Event()

    def on_text(conn: Connection, text: str) -> None:
        with app.app_context():
            handle_frame(state, conn, text)

    def on_close(conn: Connection) -> None:
        hub.remove(conn)
        done.set()
        if hub.draining:
            return  # the client reconnects elsewhere; presence expires if it does not
        gevent.spawn(_disconnected, hub, conn.user_id, conn.id, conn.data.get("groups"))

    conn = Connection(
        raw,
        user_id,
        secrets.token_hex(8),
        on_text,
        on_close,
        max_message=config.max_ws_message,
        max_backlog=config.max_ws_queue,
        max_fragments=config.max_ws_fragments,
    )
    conn.data["groups"] = group_ids
    conn.data["frames"] = TokenBucket(config.frame_rate, config.frame_burst)
    if after is not None:
        # Live events from the moment of joining wait until the replay is written:
        # the client sees what it missed first, then what came meanwhile, in order.
        conn.hold()
    subscribed = hub.add(
        conn, [hub.user_channel(user_id)] + [hub.group_channel(g) for g in group_ids]
    )
    try:
        conn.write(protocol.ws_frame(protocol.hello(user_id, conn.id, config.ping_interval)))
        conn.start()
        audience = delivery.presence_audience(state, user_id, group_ids)  # asked the host once
        if state.presence.connect(user_id, conn.id):
            hub.announcer.online(user_id, audience)
        snapshot = delivery.online_snapshot(state, user_id, audience)
        conn.write(protocol.ws_frame(protocol.online_snapshot(snapshot)))
        if after is not None:
            if subscribed is not None:
                # The replay reads what was published before; what comes after must be
                # subscribed by then, or a message in between reaches neither.
                subscribed.wait(5.0)
            catchup.replay(state, conn, after, held=True)
    except Exception:
        # The socket is already upgraded, so no HTTP error can be sent: cut it (the
        # client reconnects) and leave the hub as it was.
        conn.abort()
        raise
    hand_over(done)


def _disconnected(hub: Hub, user_id: int, conn_id: str, groups: list[int] | None) -> None:
    try:
        # The last connection: offline unless the user is back within the grace.
        expires = hub.state.presence.release(user_id, conn_id)
        if expires is not None:
            hub.announcer.closed(user_id, expires, groups)
    except Exception:
        log.exception("flask-chat: presence update failed for user %s", user_id)


def _require(frame: dict[str, Any], field: str) -> Any:
    if field not in frame:
        raise ValidationError(f"'{field}' is required.", code="missing_field", field=field)
    return frame[field]


def handle_frame(state: ChatState, conn: Connection, text: str) -> None:
    """Handle one client frame; a bad one gets an error frame, never a crash."""
    ref = None
    try:
        frame = protocol.parse_client_frame(text, tuple(state.frame_handlers))
        ref = frame.get("ref")
        kind = frame["type"]
        # Sends have their own per-user budget in Redis (messaging.py), add-ons' frames
        # their add-on's (the bridge's); every other frame costs this connection's.
        if kind in state.frame_handlers:
            state.frame_handlers[kind](conn, frame)
            return
        if kind != "send" and not conn.data["frames"].take():
            raise ChatError(
                f"Too many frames: at most {state.config.frame_rate:g} a second.",
                code="rate_limited",
                status=429,
            )
        if kind == "send":
            message, _ = messaging.send(
                state, conn.user_id, _require(frame, "to"), _require(frame, "message_text"),
                frame.get("key"),
            )
            conn.send_text(protocol.ack(ref, message))
        elif kind == "typing":
            to = ConversationKey.parse(_require(frame, "to"))
            check_target(state.hooks, conn.user_id, to)
            delivery.typing(state, conn.user_id, to)
        elif kind == "read":
            to = ConversationKey.parse(_require(frame, "to"))
            message_id = _require(frame, "id")
            if not isinstance(message_id, str) or not is_valid_id(message_id):
                raise ValidationError(
                    "'id' must be a message id.", code="invalid_field", field="id"
                )
            check_can_open(state.hooks, conn.user_id, to)
            delivery.read_mark(state, conn.user_id, to, message_id)
        elif kind == "catchup":
            after = _require(frame, "after")
            if not isinstance(after, str) or not is_valid_id(after):
                raise ValidationError(
                    "'after' must be a message id.", code="invalid_field", field="after"
                )
            catchup.replay(state, conn, after)
        elif kind == "window":
            conversation = ConversationKey.parse(_require(frame, "conversation"), "conversation")
            window_state = parse_state(_require(frame, "state"))
            check_can_open(state.hooks, conn.user_id, conversation)
            state.windows.set(conn.user_id, str(conversation), window_state)
            delivery.window(state, conn.user_id, str(conversation), window_state)
        elif kind == "ping":
            conn.send_text(protocol.PONG)
    except ChatError as err:
        METRICS.rejected_frames.labels(err.code).inc()
        conn.send_text(protocol.error(err, getattr(err, "ref", ref)))
    except (RedisError, RedisClusterException):
        # Redis is down or unreachable: nothing was stored; say so, so the client
        # retries (with the same idempotency key) instead of waiting for an ack.
        log.warning("flask-chat: Redis unavailable for a frame of %s", conn.id, exc_info=True)
        METRICS.rejected_frames.labels("unavailable").inc()
        conn.send_text(protocol.error(Unavailable(), ref))

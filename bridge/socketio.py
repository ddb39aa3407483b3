"""The socket.io 0.8 endpoint that unchanged Juggernaut browser clients connect to.

``GET /socket.io/1/`` is the handshake; ``/socket.io/1/websocket/<sid>`` the websocket
transport. The session id is kept in Redis for the minute between the two requests, so
the handshake and the websocket may land on different instances: no sticky sessions.
Frames are handled by flask-chat's own lean connection loop, like its native clients.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, request, send_from_directory
from gevent.event import Event

from flask_chat.connection import Connection
from flask_chat.errors import ConfigurationError
from flask_chat.protocol import ws_frame
from flask_chat.server import check_gevent_patched
from flask_chat.websocket import accept_socket, get_hub, hand_over

from . import protocol
from .metrics import BRIDGE_METRICS
from .router import LEGACY

if TYPE_CHECKING:
    from .extension import JuggernautBridge

log = logging.getLogger("flask_chat_bridge.socketio")

legacy = Blueprint("juggernaut_legacy", __name__)

_STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

_TRANSPORTS = "websocket"


def _bridge() -> JuggernautBridge:
    bridge: JuggernautBridge = current_app.extensions["chat_bridge"]
    return bridge


def _sid_key(sid: str) -> str:
    return f"{_bridge().chat.state.keys.prefix}:jug:sid:{sid}"


def _cors(response: Response) -> Response:
    # As socket.io 0.8 did: pages on another port (the Juggernaut port) handshake here.
    origin = request.headers.get("Origin")
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
    return response


@legacy.get("/application.js")
def juggernaut_client() -> Response:
    """The unchanged Juggernaut browser client, where the Node server served it."""
    return send_from_directory(_STATIC, "application.js", mimetype="application/javascript")


@legacy.get("/socket.io/1/")
def handshake() -> Response:
    bridge = _bridge()
    state = bridge.chat.state
    sid = str(secrets.randbelow(9 * 10**18) + 10**18)  # 19 digits, as socket.io's were
    user_id = bridge.chat.current_user_id()
    state.redis.set(_sid_key(sid), json.dumps({"user_id": user_id}), ex=60)
    body = f"{sid}:{protocol.HEARTBEAT_TIMEOUT}:{protocol.CLOSE_TIMEOUT}:{_TRANSPORTS}"
    jsonp = request.args.get("jsonp")
    if jsonp is not None and jsonp.isdigit():
        response = current_app.response_class(
            f"io.j[{jsonp}]({json.dumps(body)});", mimetype="application/javascript"
        )
    else:
        response = current_app.response_class(body, mimetype="text/plain")
    return _cors(response)


@legacy.route("/socket.io/1/websocket/<sid>", websocket=True)
def websocket(sid: str) -> Response:
    bridge = _bridge()
    chat = bridge.chat
    state = chat.state
    try:
        check_gevent_patched()
    except ConfigurationError as exc:
        return current_app.response_class(str(exc), status=500)
    record = state.redis.getdel(_sid_key(sid))
    if record is None or not sid.isdigit():
        return current_app.response_class("client not handshaken", status=403)
    if state.hub is not None and state.hub.draining:
        return current_app.response_class("reconnect elsewhere", status=503)
    # The browser sends the app's session cookie with the upgrade (cookies are per host,
    # not per port); the handshake's is the fallback.
    user_id = chat.current_user_id() or json.loads(record).get("user_id")
    hub = get_hub(chat, state)
    router = bridge.router
    assert router is not None
    raw = accept_socket()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    done = Event()

    def on_text(conn: Connection, text: str) -> None:
        with app.app_context():
            handle_frame(bridge, conn, text)

    def on_close(conn: Connection) -> None:
        hub.remove(conn)
        done.set()

    conn = Connection(
        raw, 0, sid, on_text, on_close,
        max_message=state.config.max_ws_message, max_backlog=state.config.max_ws_queue,
    )
    conn.data[LEGACY] = True
    conn.data["user_id"] = user_id
    hub.add(conn, [])
    conn.write(ws_frame(protocol.FRAME_CONNECT.encode()))
    conn.start()
    return hand_over(done)


def handle_frame(bridge: JuggernautBridge, conn: Connection, text: str) -> None:
    """One socket.io frame from a legacy browser. Like Juggernaut: no replies, no error
    frames; anything unknown is ignored (and counted)."""
    router = bridge.router
    assert router is not None
    try:
        kind, data = protocol.parse_frame(text)
    except ValueError:
        BRIDGE_METRICS.dropped.labels("bad socket.io frame").inc()
        return
    if kind == "0":
        conn.close()
        return
    if kind != "3":
        return  # heartbeats (2) only prove the client alive; json (4) and events (5)
        # were ignored by Juggernaut too
    try:
        message = json.loads(data)
    except ValueError:
        BRIDGE_METRICS.dropped.labels("bad client message").inc()
        return
    if not isinstance(message, dict):
        return
    handle_message(bridge, conn, message, conn.data.get("user_id"))


def handle_message(bridge: JuggernautBridge, conn: Connection, message: dict[str, Any],
                   user_id: int | None) -> bool:
    """subscribe / unsubscribe / meta / event, from a legacy or a native client.
    Returns False for a subscription the client may not make."""
    router = bridge.router
    assert router is not None
    kind = message.get("type")
    if kind in ("subscribe", "unsubscribe"):
        channel = message.get("channel")
        if channel is None and isinstance(message.get("channels"), list) and message["channels"]:
            channel = message["channels"][0]
        if channel is not None and not isinstance(channel, str):
            channel = json.dumps(channel)
        if kind == "unsubscribe":
            if channel is not None:
                router.unsubscribe(conn, channel)
            return True
        if not bridge.may_subscribe(user_id, channel or "undefined"):
            BRIDGE_METRICS.refused.inc()
            log.info("flask-chat bridge: refused %s a subscription to %r", conn.id, channel)
            return False
        router.subscribe(conn, channel)
    elif kind == "meta":
        router.set_meta(conn, message.get("data", protocol.NO_META))
    elif kind == "event":
        router.custom(conn, message.get("data", protocol.NO_META))
    else:
        log.debug("flask-chat bridge: unknown message type %r from %s", kind, conn.id)
    return True

"""The socket.io 0.8 endpoint that unchanged Juggernaut browser clients connect to.

``GET /socket.io/1/`` is the handshake; ``/socket.io/1/websocket/<sid>`` the websocket
transport, ``/socket.io/1/xhr-polling/<sid>`` and ``/socket.io/1/jsonp-polling/<sid>``
the polling ones (:mod:`flask_chat_bridge.polling`). The session id is kept in Redis
for the minute between the handshake and the transport's first request, and a polling
session lives in Redis, so every request may land on a different instance: no sticky
sessions. Websocket frames are handled by flask-chat's own lean connection loop, like
its native clients.

Every request follows ``/chats/ws``'s Origin rule (the app's own origin and
``CHAT_WS_ALLOWED_ORIGINS``; no Origin: not a browser). The handshake carries no
identity, JSONP or not: a websocket is the user its upgrade's own cookie says; an
xhr-polling session the user of its first poll's cookie, and every later request of it
must carry that user's cookie too. A jsonp-polling session is anonymous: its polls are
script tags, which any site's page may point anywhere with the visitor's cookie and
read, and which carry no Origin.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from flask import Blueprint, Response, current_app, request, send_from_directory
from gevent.event import Event
from redis.exceptions import RedisError

from flask_chat import protocol as chat_protocol
from flask_chat.connection import Connection
from flask_chat.errors import ChatError, ConfigurationError, Forbidden, ValidationError
from flask_chat.hub import get_hub, running_hub
from flask_chat.messaging import RateLimited
from flask_chat.protocol import ws_frame
from flask_chat.server import check_gevent_patched
from flask_chat.upgrade import (
    check_handshake,
    hand_over,
    origin_allowed,
    take_socket,
    websocket_route,
)

from . import polling, protocol
from .keys import BridgeKeys
from .metrics import BRIDGE_METRICS
from .router import LEGACY

if TYPE_CHECKING:
    from .extension import JuggernautBridge

log = logging.getLogger("flask_chat_bridge.socketio")

legacy = Blueprint("juggernaut_legacy", __name__)

_STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

_TRANSPORTS = ",".join(("websocket", *polling.TRANSPORTS))

_NATIVE_RECONNECT = ws_frame(chat_protocol.reconnect())

_KINDS = frozenset(("subscribe", "unsubscribe", "meta", "event"))
_WARNED = "juggernaut_warned"  # Connection.data key: the limits it was logged over


class TooManySubscriptions(ValidationError):
    code = "too_many_subscriptions"


class LegacyConnection(Connection):
    """A socket.io 0.8 browser's connection. The one flask-chat frame written to every
    connection, the reconnect notice of an instance that drains (SIGTERM), means nothing
    to socket.io: it would misread it as a packet for an endpoint "undefined". The close
    that follows is what tells it to reconnect, as when Node went away."""

    __slots__ = ()

    def write(self, frame: bytes) -> None:
        if frame == _NATIVE_RECONNECT:
            return
        super().write(frame)

    def deliver(self, frame: bytes) -> None:
        """flask-chat's live events mean nothing to socket.io: a logged-in legacy
        connection joins its user's channel only so that a logout closes it (the hub
        closes every member of that channel)."""


def _bridge() -> JuggernautBridge:
    bridge: JuggernautBridge = current_app.extensions["chat_bridge"]
    return bridge


def _keys() -> BridgeKeys:
    return BridgeKeys(_bridge().chat.state.keys.prefix)


def _cors(response: Response) -> Response:
    # As socket.io 0.8 did, for the origins allowed (the others were refused): a legacy
    # page on another port (the Juggernaut port) handshakes here.
    origin = request.headers.get("Origin")
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
    response.vary.add("Origin")
    return response


def _origin_refused(what: str) -> Response | None:
    """A 403 for a browser page of an origin not allowed (cross-site websocket
    hijacking: its requests carry the user's cookie); None when allowed."""
    if origin_allowed(_bridge().chat.state.config.allowed_origins):
        return None
    BRIDGE_METRICS.refused_connections.labels("origin").inc()
    log.info("flask-chat bridge: refused a socket.io %s from origin %.200r "
             "(not in CHAT_WS_ALLOWED_ORIGINS)", what, request.headers.get("Origin"))
    body = {"error": "forbidden_origin", "message": f"Cross-site socket.io {what} refused."}
    return current_app.response_class(json.dumps(body), status=403, mimetype="application/json")


@legacy.get("/application.js")
def juggernaut_client() -> Response:
    """The unchanged Juggernaut browser client, where the Node server served it."""
    return send_from_directory(_STATIC, "application.js", mimetype="application/javascript")


@legacy.get("/socket.io/1/")
def handshake() -> Response:
    refused = _origin_refused("handshake")
    if refused is not None:
        return refused
    state = _bridge().chat.state
    sid = str(secrets.randbelow(9 * 10**18) + 10**18)  # 19 digits, as socket.io's were
    # No user id: JSONP (a script tag) carries the cookie of any page's visitor past
    # CORS, and the sid goes wherever the page sends it. The websocket's own cookie
    # says who the connection is.
    state.redis.set(_keys().handshake(sid), "{}", ex=60)
    body = f"{sid}:{protocol.HEARTBEAT_TIMEOUT}:{protocol.CLOSE_TIMEOUT}:{_TRANSPORTS}"
    jsonp = request.args.get("jsonp")
    if jsonp is not None and jsonp.isdigit():
        response = current_app.response_class(
            f"io.j[{jsonp}]({json.dumps(body)});", mimetype="application/javascript"
        )
    else:
        response = current_app.response_class(body, mimetype="text/plain")
    return _cors(response)


def _refusal(sid: str) -> Response | None:
    """What refuses a legacy websocket, answered over HTTP before the handshake."""
    state = _bridge().chat.state
    try:
        check_gevent_patched()
    except ConfigurationError as exc:
        return current_app.response_class(str(exc), status=500)
    refused = _origin_refused("websocket")
    if refused is not None:
        return refused
    if not sid.isdigit() or state.redis.getdel(_keys().handshake(sid)) is None:
        BRIDGE_METRICS.refused_connections.labels("not handshaken").inc()
        return current_app.response_class("client not handshaken", status=403)
    hub = running_hub(state)
    if hub is not None and hub.draining:
        return current_app.response_class("reconnect elsewhere", status=503)
    try:
        check_handshake()
    except ChatError as exc:
        return current_app.response_class(exc.message, status=exc.status)
    return None


@websocket_route(legacy, "/socket.io/1/websocket/<sid>", check=_refusal)
def websocket(ws: Any, sid: str) -> None:
    bridge = _bridge()
    chat = bridge.chat
    state = chat.state
    # The browser sends the app's session cookie with the upgrade (cookies are per host,
    # not per port). Its own, never the handshake's: anonymous without one.
    user_id = chat.current_user_id()
    hub = get_hub(state)
    router = bridge.router
    assert router is not None
    raw = take_socket(ws)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    done = Event()

    def on_text(conn: Connection, text: str) -> None:
        with app.app_context():
            handle_frame(bridge, conn, text)

    def on_close(conn: Connection) -> None:
        hub.remove(conn)
        done.set()

    conn = LegacyConnection(
        raw, 0, sid, on_text, on_close,
        max_message=state.config.max_ws_message, max_backlog=state.config.max_ws_queue,
        max_fragments=state.config.max_ws_fragments,
    )
    conn.data[LEGACY] = True
    conn.data["user_id"] = user_id
    # A logged-in connection reads private channels: it must end when the user logs out.
    hub.add(conn, [hub.user_channel(user_id)] if user_id else [])
    conn.write(ws_frame(protocol.FRAME_CONNECT.encode()))
    conn.start()
    hand_over(done)


@legacy.route("/socket.io/1/<any('xhr-polling', 'jsonp-polling'):transport>/<sid>",
              methods=["GET", "POST"])
def poll(transport: str, sid: str) -> Response:
    """socket.io 0.8's polling transports: a GET waits for packets (up to the polling
    duration, then a noop), a POST delivers the client's. Any instance answers either."""
    bridge = _bridge()
    chat = bridge.chat
    state = chat.state
    sessions = bridge.polling
    assert sessions is not None
    refused = _origin_refused("poll")
    if refused is not None:
        return refused
    BRIDGE_METRICS.polls.labels(transport, request.method).inc()
    user_id = chat.current_user_id() if transport == "xhr-polling" else None
    known = sid.isdigit() and len(sid) <= 20
    try:
        if request.method == "POST":
            return _post(sessions, transport, sid if known else "", user_id)
        if not known:
            return _not_handshaken(transport)
        if "disconnect" in request.args:  # socket.io 0.8's disconnect by GET
            sessions.post(sid, user_id, transport, [polling.DISCONNECT])
            return _packets(transport, [])
        try:
            check_gevent_patched()
        except ConfigurationError as exc:
            return current_app.response_class(str(exc), status=500)
        hub = running_hub(state)
        if hub is not None and hub.draining:
            # Not here: the client reconnects, through the load balancer, elsewhere.
            return _json_error(503, "draining", "Reconnect elsewhere.")
        get_hub(state)  # its listeners attach the polling sessions
        packets = sessions.poll(sid, user_id, transport)
    except PermissionError:
        BRIDGE_METRICS.refused_connections.labels("another user's session").inc()
        return _json_error(403, "forbidden_session",
                           "This socket.io session belongs to another user or transport.")
    except RedisError:
        log.warning("flask-chat bridge: Redis unavailable for a socket.io poll", exc_info=True)
        return _json_error(503, "unavailable", "Try again shortly.")
    if packets is None:
        return _not_handshaken(transport)
    return _packets(transport, packets)


def _post(sessions: polling.PollingSessions, transport: str, sid: str,
          user_id: int | None) -> Response:
    limit = _bridge().chat.state.config.max_ws_message
    if (request.content_length or 0) > limit:
        return _json_error(413, "payload_too_large", f"At most {limit} bytes a POST.")
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        return _json_error(413, "payload_too_large", f"At most {limit} bytes a POST.")
    text = raw.decode("utf-8", "replace")
    if transport == "jsonp-polling":
        # A form's ``d`` field, holding the payload as a JSON string (socket.io 0.8:
        # browsers would turn a raw \n into \r\n in a form).
        try:
            fields = parse_qs(text, keep_blank_values=True, max_num_fields=8)
            value = json.loads(fields["d"][0])
        except (KeyError, ValueError, RecursionError):
            value = None
        if not isinstance(value, str):
            return _json_error(400, "bad_payload", "Expected a form field 'd' holding a "
                               "JSON string.")
        text = value
    if not sid:
        return _json_error(403, "not_handshaken", "No such socket.io session: reconnect.")
    status = sessions.post(sid, user_id, transport, polling.decode_payload(text))
    if status == polling.GONE:
        BRIDGE_METRICS.refused_connections.labels("not handshaken").inc()
        return _json_error(403, "not_handshaken", "No such socket.io session: reconnect.")
    if status == polling.REFUSED:
        raise PermissionError(sid)
    if status == polling.FULL:
        BRIDGE_METRICS.limited.labels("poll inbox").inc()
        return _json_error(429, "too_many_packets", "Too many packets not yet handled.")
    return _cors(current_app.response_class("1", mimetype="text/plain"))


def _packets(transport: str, packets: list[str]) -> Response:
    payload = polling.encode_payload(packets) if packets else ""
    if transport == "jsonp-polling":
        index = request.args.get("i", "0")
        index = index if index.isdigit() and len(index) <= 10 else "0"
        # ASCII-only JSON: no U+2028 or lone surrogate can break the script.
        response = current_app.response_class(f"io.j[{index}]({json.dumps(payload)});",
                                              mimetype="text/javascript")
    else:
        response = current_app.response_class(payload, mimetype="text/plain")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return _cors(response)


def _not_handshaken(transport: str) -> Response:
    """What socket.io 0.8 answered a poll of a session it did not know: an error packet
    whose advice makes the client reconnect (a new handshake, then a new session)."""
    BRIDGE_METRICS.refused_connections.labels("not handshaken").inc()
    return _packets(transport, [polling.NOT_HANDSHAKEN])


def _json_error(status: int, code: str, message: str) -> Response:
    body = json.dumps({"error": code, "message": message})
    return _cors(current_app.response_class(body, status=status, mimetype="application/json"))


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
        message = protocol.loads(data)  # JSON.parse: NaN and the like are refused
    except (ValueError, RecursionError):
        BRIDGE_METRICS.dropped.labels("bad client message").inc()
        return
    if not isinstance(message, dict):
        return
    try:
        handle_message(bridge, conn, message, conn.data.get("user_id"))
    except ChatError:
        pass  # refused or over a limit: ignored, as the legacy protocol has no errors


def handle_message(bridge: JuggernautBridge, conn: Connection, message: dict[str, Any],
                   user_id: int | None) -> None:
    """subscribe / unsubscribe / meta / event, from a legacy or a native client.

    Raises a ChatError for what the client may not do (counted here): a subscription
    it may not make, one over ``CHAT_JUGGERNAUT_MAX_SUBSCRIPTIONS``, a frame over
    ``CHAT_JUGGERNAUT_FRAME_RATE``. A native client gets it as an error frame; a legacy
    client's frame is dropped, as Juggernaut had no error frames."""
    router = bridge.router
    assert router is not None
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in _KINDS:  # a list is no key of a set
        log.debug("flask-chat bridge: unknown message type %.100r from %s", kind, conn.id)
        return
    # Never an unsubscribe: it only undoes a subscribe (itself limited), and dropping it
    # would leave the client subscribed.
    if kind != "unsubscribe" and not router.take_frame(conn):
        limits = router.limits
        _over_limit(conn, "rate", "over the frame rate limit (%g a second, bursts of %g)",
                    limits.frame_rate, limits.frame_burst)
        raise RateLimited(f"Too many legacy-channel frames: at most {limits.frame_rate:g} "
                          "a second.")
    if kind in ("subscribe", "unsubscribe"):
        # Juggernaut's getChannel(): the first of ``channels || channel``; none at all is
        # the channel "undefined" (whose events have no channel key).
        channels = protocol.js_channels(message)
        channel = channels[0] if channels else None
        if channel is not None and not isinstance(channel, str):
            channel = protocol.js_string(channel)
        if kind == "unsubscribe":
            router.unsubscribe(conn, channel)
            return
        if router.over_subscription_cap(conn):
            cap = router.limits.max_subscriptions
            _over_limit(conn, "subscriptions", "at the subscription limit (%d)", cap)
            raise TooManySubscriptions(
                f"At most {cap} legacy-channel subscriptions per connection.", field="channel"
            )
        if not bridge.may_subscribe(user_id, router.key(channel)):
            BRIDGE_METRICS.refused.inc()
            log.info("flask-chat bridge: refused %s a subscription to %.200r", conn.id, channel)
            raise Forbidden(f"You may not subscribe to {channel!r}.", code="forbidden_channel",
                            field="channel")
        router.subscribe(conn, channel)
    elif kind == "meta":
        router.set_meta(conn, message.get("data", protocol.NO_META))
    else:
        router.custom(conn, message.get("data", protocol.NO_META))


def _over_limit(conn: Connection, reason: str, why: str, *args: Any) -> None:
    """Count a frame over a limit; log it once per connection and limit."""
    BRIDGE_METRICS.limited.labels(reason).inc()
    warned: set[str] = conn.data.setdefault(_WARNED, set())
    if reason not in warned:
        warned.add(reason)
        log.warning("flask-chat bridge: connection %s is " + why + "; its frames over it are "
                    "dropped (legacy clients) or refused (native clients)", conn.id, *args)


"""The HTTP routes, the Python counterpart of the legacy ``ChatsController``.

Every route answers JSON. Errors are ``{"error": code, "message": text}`` with the codes
listed in ``docs/api.md``; a refused request stores nothing.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request
from redis.exceptions import RedisClusterException, RedisError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.exceptions import NotFound as NotFoundError

from . import csrf, delivery, messaging, reading
from .access import check_can_open
from .conversations import ConversationKey
from .errors import (
    ChatError,
    NotAuthenticated,
    NotFound,
    Unavailable,
    ValidationError,
)
from .hub import running_hub
from .ids import is_valid_id
from .state import ChatState, current_state
from .windows import parse_state

blueprint = Blueprint("chat", __name__, static_folder="static")

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def json_response(body: Any, status: int = 200) -> Response:
    # json.dumps rather than jsonify: jsonify sorts keys, and the history keeps the
    # legacy order (conversations by first use, message fields as Rails wrote them).
    return current_app.response_class(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        status=status,
        mimetype="application/json",
    )


def _state() -> ChatState:
    return current_state()


#: Routes that answer without a logged-in user.
_PUBLIC = ("chat.static", "chat.health", "chat.websocket", "chat.api_send_message")


@blueprint.before_request
def _authenticate() -> None:
    if request.endpoint in _PUBLIC:
        return
    state = _state()
    request.max_content_length = state.config.max_request_bytes
    user_id = state.hooks.current_user_id()
    if user_id is None:
        raise NotAuthenticated("Log in to use the chat.")
    g.chat_user_id = user_id
    if request.method not in ("GET", "HEAD", "OPTIONS") and state.config.csrf_enabled:
        csrf.check_request()


@blueprint.errorhandler(ChatError)
def _chat_error(error: ChatError) -> Response:
    return json_response(error.to_dict(), error.status)


@blueprint.errorhandler(RedisError)
@blueprint.errorhandler(RedisClusterException)  # e.g. a slot no master serves yet
def _redis_down(error: Exception) -> Response:
    # Nothing was stored (a send is one atomic step); the client may retry.
    current_app.logger.warning("flask-chat: Redis unavailable: %s", error)
    response = json_response(Unavailable().to_dict(), 503)
    response.headers["Retry-After"] = "1"
    return response


@blueprint.errorhandler(OperationalError)
def _database_down(error: OperationalError) -> Response:
    current_app.logger.warning("flask-chat: the history database is unavailable: %s", error)
    response = json_response(
        Unavailable("The chat history is unavailable; try again soon.").to_dict(), 503
    )
    response.headers["Retry-After"] = "1"
    return response


def _routing_error(
    error: HTTPException, host_handler: Callable[[HTTPException], Any] | None
) -> Any:
    chat = current_app.extensions.get("chat")
    prefix = chat.state.config.url_prefix if chat is not None else None
    if prefix and (request.path == prefix or request.path.startswith(prefix + "/")):
        code = "method_not_allowed" if error.code == 405 else "not_found"
        response = json_response({"error": code, "message": error.description}, error.code or 404)
        response.headers.extend(h for h in error.get_headers() if h[0] == "Allow")
        return response
    if host_handler is not None:
        return host_handler(error)
    return error


def register_routing_errors(app: Flask) -> None:
    """404 and 405 under ``CHAT_URL_PREFIX`` answer JSON like every chat route. Routing
    fails before any blueprint is known, so these are app-wide handlers; every other
    path goes to the host app's own handler (registered before this), or Flask's page."""
    for code, exc_class in ((404, NotFoundError), (405, MethodNotAllowed)):
        host_handler = app.error_handler_spec.get(None, {}).get(code, {}).get(exc_class)

        def handler(
            error: HTTPException, host_handler: Callable[[HTTPException], Any] | None = host_handler
        ) -> Any:
            return _routing_error(error, host_handler)

        app.register_error_handler(code, handler)


@blueprint.errorhandler(RequestEntityTooLarge)
def _too_large(error: RequestEntityTooLarge) -> Response:
    limit = _state().config.max_request_bytes
    return json_response(
        {"error": "request_too_large", "message": f"The request body is over {limit} bytes."},
        413,
    )


def read_body() -> Mapping[str, Any]:
    """The request's fields, from a JSON object or a form; anything else is refused."""
    mimetype = request.mimetype
    if mimetype == "application/json":
        try:
            data = json.loads(request.get_data())
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ValidationError("The body is not valid JSON.", code="invalid_json") from None
        if not isinstance(data, dict):
            raise ValidationError("The JSON body must be an object.", code="invalid_body")
        return data
    if mimetype in _FORM_TYPES:
        return request.form.to_dict()
    raise ChatError(
        "Send application/json or a form (application/x-www-form-urlencoded).",
        code="unsupported_media_type",
        status=415,
    )


def _require(body: Mapping[str, Any], field: str) -> Any:
    if field not in body:
        raise ValidationError(f"'{field}' is required.", code="missing_field", field=field)
    return body[field]


@blueprint.post("/send_message")
def send_message() -> Response:
    body = read_body()
    to = _require(body, "to")
    text = _require(body, "message_text")
    message, _ = messaging.send(
        _state(), g.chat_user_id, to, text, request.headers.get("Idempotency-Key"))
    return json_response(message.for_sender(), 201)


@blueprint.post("/api/messages")
def api_send_message() -> Response:
    """Send as any user, for trusted servers (a Rails app moving off ``Juggernaut.publish``):
    ``Authorization: Bearer <CHAT_API_TOKEN>``, JSON ``sender_id``, ``to``,
    ``message_text``. Not a browser route: no session, so no CSRF."""
    config = _state().config
    if not config.api_token:
        raise NotFound("The server send API is not enabled (set CHAT_API_TOKEN).",
                       code="not_found")
    request.max_content_length = config.max_request_bytes
    given = request.headers.get("Authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), config.api_token.encode()
    ):
        raise ChatError("A valid 'Authorization: Bearer <token>' header is required.",
                        code="invalid_token", status=401)
    body = read_body()
    sender = _require(body, "sender_id")
    if isinstance(sender, str) and _DIGITS.fullmatch(sender):
        sender = int(sender)
    message, _ = messaging.send(
        _state(), sender, _require(body, "to"), _require(body, "message_text"),
        request.headers.get("Idempotency-Key"),
    )
    return json_response(message.for_sender(), 201)


@blueprint.get("/history")
def history() -> Response:
    return json_response(reading.history(_state(), g.chat_user_id))


#: ASCII digits only, and few of them: str.isdigit() accepts "²" and "٣", which int()
#: then refuses or reads, and a 5,000-digit number costs int() a ValueError.
_DIGITS = re.compile(r"[0-9]{1,16}")


def _int_arg(name: str, default: int, maximum: int, minimum: int = 1) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or not minimum <= int(raw) <= maximum:
        raise ValidationError(
            f"'{name}' must be a whole number from {minimum} to {maximum}.",
            code="invalid_parameter",
            field=name,
        )
    return int(raw)


@blueprint.get("/conversations/<key>")
def conversation(key: str) -> Response:
    conv = ConversationKey.parse(key, field="key")
    check_can_open(_state().hooks, g.chat_user_id, conv)
    page_size = _state().config.page_size
    limit = _int_arg("limit", page_size, page_size * 4)
    before = request.args.get("before")
    if before is not None and not is_valid_id(before):
        raise ValidationError(
            "'before' must be a message id.", code="invalid_parameter", field="before"
        )
    cache = _state().cache
    messages = cache.page(g.chat_user_id, str(conv), before, limit)
    if conv.is_group:
        # Members who were offline missed some group messages in their own cache; the
        # group's shared store has the recent ones.
        merged = {m["id"]: m for m in cache.group_page(g.chat_user_id, conv.id, before, limit)}
        merged.update((m["id"], m) for m in messages)
        messages = [merged[i] for i in sorted(merged, reverse=True)[:limit]]
    if len(messages) < limit:
        # The cache is a window: older messages come from SQL, the record.
        oldest = messages[-1]["id"] if messages else before
        older = _state().history.conversation_page(
            g.chat_user_id, conv, oldest, limit - len(messages)
        )
        messages.extend(older)
    return json_response(
        {
            "conversation": str(conv),
            "type": conv.kind,
            "messages": messages,
            "next_before": messages[-1]["id"] if len(messages) == limit else None,
        }
    )


@blueprint.get("/windows")
def windows() -> Response:
    return json_response({"windows": _state().windows.get(g.chat_user_id)})


@blueprint.post("/windows")
def set_window() -> Response:
    body = read_body()
    conv = ConversationKey.parse(_require(body, "conversation"), field="conversation")
    state = parse_state(_require(body, "state"))
    check_can_open(_state().hooks, g.chat_user_id, conv)
    chat_state = _state()
    chat_state.windows.set(g.chat_user_id, str(conv), state)
    delivery.window(chat_state, g.chat_user_id, str(conv), state)
    return json_response({"windows": chat_state.windows.get(g.chat_user_id)})


@blueprint.get("/transcripts")
def transcripts() -> Response:
    page = _int_arg("page", 1, 1_000_000)
    per_page = _int_arg("per_page", 10, 100)
    return json_response(reading.transcripts(_state(), g.chat_user_id, page, per_page))


@blueprint.get("/online_users")
def online_users() -> Response:
    """The online users the current user can see (shares a group or a conversation)."""
    state = _state()
    page_size = state.config.page_size
    limit = _int_arg("limit", page_size, page_size * 4)
    start = _int_arg("offset", 0, 10**9, minimum=0)
    ids = sorted(delivery.online_snapshot(state, g.chat_user_id))
    users = []
    for uid in ids[start : start + limit]:
        info = state.hooks.get_user(uid)
        if info is not None:
            users.append(info.to_dict())
    return json_response({"users": users, "total": len(ids), "offset": start, "limit": limit})


@blueprint.get("/health")
def health() -> Response:
    """For load balancer checks: 200 while this instance takes connections, else 503."""
    state = _state()
    hub = running_hub(state)
    try:
        redis_ok = bool(state.redis.ping())
    except Exception:  # any failure to reach Redis means "unhealthy", which we report
        redis_ok = False
    draining = bool(hub and hub.draining)
    body = {
        "status": "ok" if redis_ok and not draining else "unavailable",
        "redis": redis_ok,
        "draining": draining,
        "connections": len(hub.connections) if hub else 0,
        "subscriber_connected": bool(hub and hub.subscriber.connected),
    }
    return json_response(body, 200 if body["status"] == "ok" else 503)


def metrics_view() -> Response:
    from .metrics import render

    data, content_type = render()
    return current_app.response_class(data, mimetype=content_type.split(";")[0])

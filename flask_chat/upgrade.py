"""Websocket endpoints: declared through flask-sock, checked before the handshake,
then taken over by a :class:`~flask_chat.connection.Connection`.

This is the supported way for flask-chat's own ``/chats/ws`` and for add-ons (the
Juggernaut bridge's socket.io endpoint) to serve a websocket::

    @websocket_route(blueprint, "/ws", check=refuse_or_none)
    def endpoint(ws):
        raw = take_socket(ws)           # a plain non-blocking socket, Nagle off
        conn = Connection(raw, ...)     # flask-chat's own loop reads and writes it
        ...
        hand_over(done)                 # the request ends; the socket lives on

``check(**view_args)`` runs on the plain HTTP request, so it can still answer with an
HTTP error (401, 403, 429...); flask-sock's handshake (simple-websocket, wsproto) only
runs for requests it let through. The handshake's reader thread is not used: the
connection reads the socket itself, without a greenlet per idle connection.
"""

from __future__ import annotations

import base64
import binascii
import socket
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Blueprint, Response, request
from flask_sock import Sock
from gevent.event import Event
from gevent.monkey import get_original

from .errors import ChatError

#: The flask-sock registry of flask-chat's websocket routes (and its add-ons').
sock = Sock()

F = TypeVar("F", bound=Callable[..., Any])
Check = Callable[..., Response | None]

_RawSocket = get_original("socket", "socket")
_checks: dict[str, Check] = {}
_guarded: set[str] = set()


def websocket_route(bp: Blueprint, rule: str, *, check: Check) -> Callable[[F], F]:
    """Declare the websocket endpoint ``rule`` on ``bp`` through flask-sock, with
    ``check`` run before its handshake (it answers a refusal, or None to go on)."""

    def decorator(view: F) -> F:
        _checks[f"{bp.name}.{view.__name__}"] = check
        if bp.name not in _guarded:
            _guarded.add(bp.name)
            bp.before_request(_before_handshake)
        sock.route(rule, bp=bp)(view)
        return view

    return decorator


def _before_handshake() -> Response | None:
    check = _checks.get(request.endpoint or "")
    if check is None:
        return None
    # No compression (costly per message, rarely worth it for short chat frames):
    # simple-websocket accepts permessage-deflate whenever it is offered.
    request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
    return check(**(request.view_args or {}))


def check_handshake() -> None:
    """Refuse a malformed upgrade with a 4xx before anything is written to the socket
    (wsproto would raise on it, and a 500 is not an answer)."""
    version = request.headers.get("Sec-WebSocket-Version", "")
    if version.strip() != "13":
        raise ChatError(
            "Only websocket protocol version 13 is supported.",
            code="unsupported_websocket_version",
            status=426,
        )
    key = request.headers.get("Sec-WebSocket-Key", "").strip()
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except (ValueError, binascii.Error):
        valid_key = False
    if not valid_key:
        raise ChatError(
            "'Sec-WebSocket-Key' must be 16 random bytes in base64.",
            code="bad_handshake",
            status=400,
        )


def origin_allowed(allowed: tuple[str, ...]) -> bool:
    """May the page that sent this request use the user's cookie here? (The app's own
    origin, ``allowed`` ones, or no Origin at all: not a browser.)"""
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser: cross-site websocket hijacking needs one
    own = f"{request.scheme.replace('ws', 'http')}://{request.host}"
    if origin == own or origin in allowed or "*" in allowed:
        return True
    # Behind a TLS-terminating proxy the scheme we see may be http.
    parsed = urlsplit(origin)
    return (
        parsed.netloc == request.host
        and parsed.scheme in ("http", "https")
        and (request.headers.get("X-Forwarded-Proto", parsed.scheme) == parsed.scheme)
    )


def take_socket(ws: Any) -> socket.socket:
    """Take the socket of flask-sock's just-accepted websocket ``ws``: a plain
    non-blocking socket, with Nagle off, for :class:`~flask_chat.connection.Connection`.
    ``ws`` is done with: its reader and flask-sock's closing leave the socket alone."""
    ws.connected = False
    gsock = ws.sock
    raw: socket.socket = _RawSocket(gsock.family, gsock.type, gsock.proto, fileno=gsock.detach())
    raw.setblocking(False)
    if raw.family in (socket.AF_INET, socket.AF_INET6):
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return raw


def hand_over(done: Event) -> None:
    """End the request, leaving its socket to the connection."""
    detach = request.environ.get("flask_chat.detach")
    if detach is not None:
        detach()  # our gevent server forgets the socket; no greenlet stays parked
    else:
        done.wait()  # other servers (gunicorn): park this greenlet until the end

"""Serving a flask-chat app on gevent.

The library never monkey-patches: the entry point does, on its first line. This module
refuses to start when it has not, rather than hang later on a blocking socket.

    from gevent import monkey; monkey.patch_all()
    from flask_chat.server import make_server
    make_server(app, "0.0.0.0", 8000).serve_forever()
"""

from __future__ import annotations

import socket
from typing import Any

from gevent.pywsgi import WSGIServer

from .errors import ConfigurationError


def check_gevent_patched() -> None:
    """Raise unless ``gevent.monkey.patch_all()`` (or at least the socket patch) ran."""
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        raise ConfigurationError(
            "flask-chat runs on gevent, but the socket module is not patched: call "
            "'from gevent import monkey; monkey.patch_all()' on the first line of your "
            "entry point, before anything else is imported."
        )


class ChatWSGIServer(WSGIServer):  # type: ignore[misc]
    """gevent's WSGI server with Nagle's algorithm off on every connection.

    pywsgi writes a response's headers and body in separate sends; with Nagle on, the
    second waits for the client's delayed ACK (~40 ms on Linux) on every keep-alive
    request.
    """

    def handle(self, sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle(sock, address)


def make_server(
    app: Any, host: str = "127.0.0.1", port: int = 5000, **kwargs: Any
) -> ChatWSGIServer:
    """A ready-to-run gevent server for ``app``; checks that gevent patched the socket."""
    check_gevent_patched()
    return ChatWSGIServer((host, port), app, **kwargs)

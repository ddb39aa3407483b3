"""Serving a flask-chat app on gevent.

The library never monkey-patches: the entry point does, on its first line. This module
refuses to start when it has not, rather than hang later on a blocking socket.

    from gevent import monkey; monkey.patch_all()
    from flask_chat.server import make_server
    make_server(app, "0.0.0.0", 8000).serve_forever()
"""

from __future__ import annotations

import logging
import signal
import socket
from typing import Any

import gevent
from gevent.pywsgi import WSGIHandler, WSGIServer

from .errors import ConfigurationError
from .hub import get_hub, has_listeners, running_hub


def check_gevent_patched() -> None:
    """Raise unless ``gevent.monkey.patch_all()`` (or at least the socket patch) ran."""
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        raise ConfigurationError(
            "flask-chat runs on gevent, but the socket module is not patched: call "
            "'from gevent import monkey; monkey.patch_all()' on the first line of your "
            "entry point, before anything else is imported."
        )


class ChatWSGIHandler(WSGIHandler):  # type: ignore[misc]
    """Lets a websocket take its connection over and end the request greenlet.

    ``environ["flask_chat.detach"]()`` makes pywsgi forget the socket: it neither reads
    from it for another request nor closes it, so the websocket lives on without a
    greenlet parked on it (the websocket holds its own duplicate of the descriptor).
    """

    _detached: tuple[Any, Any] | None = None

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        environ["flask_chat.detach"] = self._detach
        return environ

    def _detach(self) -> None:
        self.close_connection = True
        self._detached = (self.socket, self.rfile)  # type: ignore[has-type]
        self.socket = None

    def handle(self) -> None:
        try:
            super().handle()
        finally:
            if self._detached is not None:
                # Close our descriptor of a socket the websocket took over (it has its
                # own): left to the garbage collector, it keeps the TCP connection open
                # after the websocket is closed, and the browser never sees the end.
                sock, rfile = self._detached
                self._detached = None
                for part in (rfile, sock):
                    try:
                        part.close()
                    except OSError:
                        pass  # best effort: the websocket's descriptor is what matters


class ChatWSGIServer(WSGIServer):  # type: ignore[misc]
    """gevent's WSGI server with Nagle's algorithm off on every connection, and
    websockets that outlive their request greenlet.

    pywsgi writes a response's headers and body in separate sends; with Nagle on, the
    second waits for the client's delayed ACK (~40 ms on Linux) on every keep-alive
    request.
    """

    handler_class = ChatWSGIHandler

    def handle(self, sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle(sock, address)


def make_server(
    app: Any, host: str = "127.0.0.1", port: int = 5000, **kwargs: Any
) -> ChatWSGIServer:
    """A ready-to-run gevent server for ``app``; checks that gevent patched the socket,
    and starts the hub now if an add-on needs it from the start (:func:`start_hub`)."""
    check_gevent_patched()
    start_hub(app)
    return ChatWSGIServer((host, port), app, **kwargs)


def start_hub(app: Any) -> bool:
    """Start ``app``'s hub now, not with the first websocket, when an add-on listens
    for it (``Chat.add_hub_listener``: the Juggernaut bridge, which must consume ``juggernaut``
    and translate legacy publishes while no client is connected). :func:`make_server`
    (and so :func:`serve`) calls it; under gunicorn, call it from the
    ``post_worker_init`` hook (``examples/gunicorn.conf.py``). Idempotent; whether the
    hub runs."""
    chat = getattr(app, "extensions", {}).get("chat")
    if chat is None:
        return False  # not a Flask app with flask-chat (a WSGI middleware?): nothing to do
    state = chat.state_of(app)
    if running_hub(state) is None and has_listeners(state):
        with app.app_context():  # the add-ons' listeners run in it, as in a request
            get_hub(state)
    return running_hub(state) is not None


log = logging.getLogger("flask_chat.server")


def drain(app: Any, timeout: float = 10.0) -> None:
    """Tell this instance's websocket clients to reconnect elsewhere and close them."""
    chat = app.extensions.get("chat")
    if chat is None:
        return
    hub = running_hub(chat.state_of(app))
    if hub is not None:
        hub.drain(timeout)


def serve(app: Any, host: str = "127.0.0.1", port: int = 5000, **kwargs: Any) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then shut down without losing anything:
    stop accepting, tell every websocket client to reconnect elsewhere (they catch up
    there), finish requests in flight, exit. What a rolling deploy needs."""
    server = make_server(app, host, port, **kwargs)
    stopping = gevent.event.Event()
    stopped = gevent.event.Event()

    def shutdown() -> None:
        if stopping.is_set():
            return
        stopping.set()
        try:
            log.warning("flask-chat: shutting down: draining connections")
            server.close()  # stop accepting; the load balancer's next check fails over
            drain(app)
            server.stop(timeout=5)
        finally:
            stopped.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, lambda: gevent.spawn(shutdown))
    server.serve_forever()
    # close() above ends serve_forever at once: without this wait the process would
    # exit at the drain's first wait (for the clients to go, for Redis).
    if stopping.is_set():
        stopped.wait()

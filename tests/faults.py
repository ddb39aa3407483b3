"""Network faults on demand: a TCP proxy that delays bytes, or cuts a connection.

:class:`DelayProxy` forwards connections to a real server (Redis, or an app instance)
and delays the bytes of each direction by its own, changeable amount, keeping their
order, as a slow or congested network link would. Put one between an app instance and
Redis and that instance's replies, and so its next commands, arrive late while every
other instance runs at full speed: the interleavings a failover or a slow machine
produces. Put one in front of an app instance and :meth:`DelayProxy.cut_next_answer`
drops the server's next answer and cuts the connection, as when a load balancer or the
network fails after the request was handled (the client is left in doubt).
"""

from __future__ import annotations

import queue
import socket
import threading
import time

from helpers import free_port


class DelayProxy:
    """Forward ``127.0.0.1:<port>`` to ``target``; ``down`` seconds of delay on the bytes
    from the target to the client, ``up`` on those from the client to the target."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.up = 0.0
        self.down = 0.0
        self._cut = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, upstream]
            self._pipe(client, upstream, "up")
            self._pipe(upstream, client, "down")

    def _pipe(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        held: queue.Queue[tuple[float, bytes]] = queue.Queue()

        def read() -> None:
            try:
                while True:
                    data = src.recv(65536)
                    if data and direction == "down" and self._cut.is_set():
                        self._cut.clear()
                        data = b""  # dropped; the connection ends here
                        for s in (src, dst):
                            s.shutdown(socket.SHUT_RDWR)
                    held.put((time.monotonic() + getattr(self, direction), data))
                    if not data:
                        return
            except OSError:
                held.put((0.0, b""))

        def write() -> None:
            try:
                while True:
                    due, data = held.get()
                    # Holding the bytes until they are due is the point of this proxy.
                    pause = due - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass  # the other side went away: this direction just ends
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass  # already closed

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=write, daemon=True).start()

    def cut_next_answer(self) -> None:
        """Drop the next bytes the server sends on any connection and cut that one."""
        self._cut.set()

    def drop_held(self) -> None:
        """Cut every connection now; bytes still held are never delivered."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed
            s.close()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self._listener.close()
        self.drop_held()

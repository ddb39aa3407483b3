"""Helpers of the unit tests (test_unit_*): a real connected socket pair around a
:class:`flask_chat.connection.Connection`, a reader of the server frames its peer gets,
and polling that lets gevent's loop run.

The test process is not monkey-patched, so waiting must yield to gevent explicitly
(``until``; the peer's socket is a gevent socket): the connection's watchers and the
hub's greenlets only run while the test waits.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, TypeVar

import gevent
import gevent.socket
from helpers import wait_for

from flask_chat import protocol
from flask_chat.connection import Connection

T = TypeVar("T")


def until(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.01, what: str = ""
) -> T:
    """Poll ``predicate`` (yielding to gevent) until it is truthy or ``timeout`` passes."""
    return wait_for(predicate, timeout, interval, what, sleep=gevent.sleep)


def client_frame(
    payload: bytes,
    opcode: int = protocol.OP_TEXT,
    fin: bool = True,
    mask: bytes = b"\x01\x02\x03\x04",
) -> bytes:
    """One masked client frame (RFC 6455 section 5.3: every client frame is masked)."""
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


class Peer:
    """The client end of a socket pair: reads the unmasked frames the server writes."""

    def __init__(self, sock: gevent.socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        #: Every byte received so far, to compare what two peers got.
        self.received = b""
        self.eof = False

    def _fill(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        self.received += data
        return True

    def _split(self) -> tuple[int, bytes] | None:
        buf = self.buf
        if len(buf) < 2:
            return None
        assert buf[1] & 0x80 == 0, "server frames are never masked"
        length, head = buf[1] & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, head = struct.unpack_from("!H", buf, 2)[0], 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, head = struct.unpack_from("!Q", buf, 2)[0], 10
        if len(buf) < head + length:
            return None
        self.buf = buf[head + length :]
        return buf[0] & 0x0F, buf[head : head + length]

    def frame(self, timeout: float = 10.0) -> tuple[int, bytes]:
        """The next frame: (opcode, payload)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self._split()
            if found is not None:
                return found
            left = deadline - time.monotonic()
            if self.eof or left <= 0:
                raise AssertionError(f"no frame came (eof={self.eof}, buffered={self.buf!r})")
            self._fill(min(left, 0.5))

    def text(self, timeout: float = 10.0) -> bytes:
        """The payload of the next frame, which must be a text frame."""
        opcode, payload = self.frame(timeout)
        assert opcode == protocol.OP_TEXT, (opcode, payload)
        return payload

    def event(self, timeout: float = 10.0) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.text(timeout))
        return decoded

    def close_code(self, timeout: float = 10.0) -> int:
        """Read up to the close frame; its status code."""
        while True:
            opcode, payload = self.frame(timeout)
            if opcode == protocol.OP_CLOSE:
                code: int = struct.unpack("!H", payload[:2])[0]
                return code

    def pending(self) -> bytes:
        """What has arrived and not been read yet, without waiting for more."""
        while self._fill(0.0):
            pass
        return self.buf

    def wait_eof(self, timeout: float = 10.0) -> None:
        """Read until the server ends the stream (what arrives meanwhile is kept)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            if time.monotonic() > deadline:
                raise AssertionError("the server never ended the stream")
            self._fill(0.2)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


class Pairs:
    """Makes connections over socket pairs; closes everything at the end of a test."""

    def __init__(self) -> None:
        self.made: list[tuple[Connection, Peer]] = []

    def __call__(
        self,
        user_id: int,
        on_close: Callable[[Connection], None] = lambda conn: None,
        on_text: Callable[[Connection, str], None] = lambda conn, text: None,
        connection_id: str | None = None,
        groups: list[int] | None = None,
        max_message: int = 65536,
        max_backlog: int = 1 << 20,
        start: bool = True,
    ) -> tuple[Connection, Peer]:
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        conn = Connection(
            ours,
            user_id,
            connection_id or f"c{len(self.made)}-u{user_id}",
            on_text,
            on_close,
            max_message=max_message,
            max_backlog=max_backlog,
        )
        conn.data["groups"] = list(groups or [])
        peer = Peer(gevent.socket.socket(fileno=theirs.detach()))
        self.made.append((conn, peer))
        if start:
            conn.start()
        return conn, peer

    def close(self) -> None:
        for conn, peer in self.made:
            conn.abort()
            peer.close()
        gevent.sleep(0)

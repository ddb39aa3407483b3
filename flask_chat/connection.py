"""One websocket connection, without a greenlet of its own while it is idle.

After the handshake flask-chat owns the raw, non-blocking socket. gevent's event loop
watches it and calls :meth:`Connection._on_readable` when bytes arrive; frames are
parsed here, control frames answered here, and text frames queued for a short-lived
handler greenlet. Writes never block: what the kernel does not take at once waits in a
per-connection backlog flushed when the socket is writable, and a backlog over the byte
budget disconnects the client (close 1008, the client resyncs) instead of growing memory
or stalling everyone else (simple-websocket's ``send`` drops partial writes under gevent
and corrupts the stream; see its issue 45).
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Collection
from typing import Any

import gevent
from gevent import get_hub

from . import protocol

log = logging.getLogger("flask_chat.connection")

PING_FRAME = protocol.ws_frame(b"", protocol.OP_PING)
_READ_SIZE = 65536
_EVENT_READ = 1
_EVENT_WRITE = 2


def unmask(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


class ProtocolViolation(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Connection:
    """A live websocket. ``on_text(conn, text)`` handles each complete text message in
    arrival order; ``on_close(conn)`` runs once when the connection ends."""

    __slots__ = (
        "sock",
        "fd",
        "user_id",
        "id",
        "channels",
        "data",
        "on_text",
        "on_close",
        "max_message",
        "max_backlog",
        "max_fragments",
        "last_seen",
        "closed",
        "_closing",
        "_buf",
        "_parts",
        "_parts_len",
        "_parts_op",
        "_inbox",
        "_handler",
        "_backlog",
        "_backlog_bytes",
        "_largest",
        "_held",
        "_held_depth",
        "_reader",
        "_writer",
        "__weakref__",
    )

    def __init__(
        self,
        sock: Any,
        user_id: int,
        connection_id: str,
        on_text: Callable[[Connection, str], None],
        on_close: Callable[[Connection], None],
        max_message: int,
        max_backlog: int,
        max_fragments: int = 64,
    ) -> None:
        self.sock = sock  # a plain (unpatched) non-blocking socket
        self.fd = sock.fileno()
        self.user_id = user_id
        self.id = connection_id
        self.channels: set[bytes] = set()
        self.data: dict[str, Any] = {}
        self.on_text = on_text
        self.on_close = on_close
        self.max_message = max_message
        self.max_backlog = max_backlog
        self.max_fragments = max_fragments
        self.last_seen = time.monotonic()
        self.closed = False
        self._closing = False
        self._buf = b""
        self._parts: list[bytes] = []
        self._parts_len = 0
        self._parts_op = 0
        self._inbox: deque[str] | None = None
        self._handler: gevent.Greenlet | None = None
        self._backlog: deque[memoryview] | None = None
        self._backlog_bytes = 0
        self._largest = 0  # the largest frame queued since the backlog was last empty
        self._held: list[bytes] | None = None
        self._held_depth = 0
        loop = get_hub().loop
        self._reader = loop.io(self.fd, _EVENT_READ)
        self._writer: Any = None

    def start(self, initial: bytes = b"") -> None:
        if initial:
            self._feed(initial)
        if not self.closed:
            self._reader.start(self._on_readable)

    # -- writing -------------------------------------------------------------------

    def write(self, frame: bytes) -> None:
        """Queue ``frame`` (already framed); never blocks, never raises."""
        if self.closed or self._closing:
            return
        if self._backlog:
            self._queue(memoryview(frame), len(frame))
            return
        try:
            sent = self.sock.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.abort()
            return
        if sent < len(frame):
            self._queue(memoryview(frame)[sent:], len(frame))

    def send_text(self, payload: bytes) -> None:
        self.write(protocol.ws_frame(payload))

    # -- live frames and catch-up --------------------------------------------------

    def deliver(self, frame: bytes) -> None:
        """Write a live frame from the hub, unless a catch-up holds live frames back."""
        if self._held is None:
            self.write(frame)
        else:
            self._held.append(frame)

    def hold(self) -> None:
        """Hold live frames back (until :meth:`release`) while a catch-up is written, so
        that the client sees the replay first and then what came live meanwhile."""
        self._held_depth += 1
        if self._held is None:
            self._held = []

    def release(self, replayed: Collection[str] = ()) -> None:
        """Write the live frames held back, but for messages the replay already carried."""
        self._held_depth -= 1
        if self._held_depth > 0 or self._held is None:
            return
        held, self._held = self._held, None
        for frame in held:
            if replayed and protocol.frame_message_id(frame) in replayed:
                continue
            self.write(frame)

    def _queue(self, chunk: memoryview, frame_size: int) -> None:
        if self._backlog is None:
            self._backlog = deque()
        self._backlog.append(chunk)
        self._backlog_bytes += len(chunk)
        # The budget is per message too: one frame bigger than max_backlog (a legacy
        # publish of several MB) would otherwise cut every healthy client it is written
        # to. Until the backlog is empty again it may hold twice the largest frame queued
        # since: that frame, and as much again behind it. A client that does not keep up
        # still goes past that and is cut; the bytes it holds stay bounded (and a frame
        # is one buffer shared by every connection it is written to).
        if frame_size > self._largest:
            self._largest = frame_size
        if self._backlog_bytes > max(self.max_backlog, 2 * self._largest):
            from .metrics import METRICS

            METRICS.slow_disconnects.inc()
            log.info(
                "flask-chat: disconnecting slow client %s (backlog %d bytes)",
                self.id,
                self._backlog_bytes,
            )
            # The backlog is dropped; a close frame cannot get through a full socket
            # anyway, so cut the connection and let the client reconnect and catch up.
            self.abort()
            return
        if self._writer is None:
            self._writer = get_hub().loop.io(self.fd, _EVENT_WRITE)
        if not self._writer.active:
            self._writer.start(self._on_writable)

    def _on_writable(self) -> None:
        backlog = self._backlog
        try:
            while backlog:
                chunk = backlog[0]
                try:
                    sent = self.sock.send(chunk)
                except BlockingIOError:
                    return
                self._backlog_bytes -= sent
                if sent < len(chunk):
                    backlog[0] = chunk[sent:]
                    return
                backlog.popleft()
            self._largest = 0
            self._writer.stop()
            if self._closing:
                self._finish_close()
        except OSError:
            self.abort()

    # -- reading -------------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(_READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            self.abort()
            return
        if not data:
            self.abort()
            return
        self.last_seen = time.monotonic()
        if not self._closing:
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        try:
            pos = self._parse(buf)
        except ProtocolViolation as exc:
            self.close(exc.code, exc.reason)
            return
        except Exception:
            log.exception("flask-chat: error parsing websocket data from %s", self.id)
            self.close(protocol.CLOSE_PROTOCOL_ERROR, "bad frame")
            return
        self._buf = buf[pos:]

    def _parse(self, buf: bytes) -> int:
        pos = 0
        end = len(buf)
        while not self.closed and end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            fin = b0 & 0x80
            if b0 & 0x70:
                raise ProtocolViolation(protocol.CLOSE_PROTOCOL_ERROR, "reserved bits set")
            opcode = b0 & 0x0F
            if not b1 & 0x80:
                raise ProtocolViolation(
                    protocol.CLOSE_PROTOCOL_ERROR, "client frames must be masked"
                )
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if end - pos < 4:
                    break
                length = struct.unpack_from("!H", buf, pos + 2)[0]
                head = 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = struct.unpack_from("!Q", buf, pos + 2)[0]
                head = 10
            if opcode >= 0x8 and (length > 125 or not fin):
                raise ProtocolViolation(protocol.CLOSE_PROTOCOL_ERROR, "bad control frame")
            if self._parts_len + length > self.max_message:
                raise ProtocolViolation(protocol.CLOSE_TOO_BIG, "message too big")
            total = head + 4 + length
            if end - pos < total:
                break
            mask = buf[pos + head : pos + head + 4]
            payload = unmask(buf[pos + head + 4 : pos + total], mask)
            pos += total
            self._on_frame(fin, opcode, payload)
        return pos

    def _on_frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode == protocol.OP_PING:
            self.write(protocol.ws_frame(payload, protocol.OP_PONG))
            return
        if opcode == protocol.OP_PONG:
            return
        if opcode == protocol.OP_CLOSE:
            code = (
                struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else protocol.CLOSE_NORMAL
            )
            self.close(code if 1000 <= code < 5000 and code not in (1005, 1006, 1015) else 1000)
            return
        if opcode == protocol.OP_CONTINUATION:
            if not self._parts:
                raise ProtocolViolation(protocol.CLOSE_PROTOCOL_ERROR, "unexpected continuation")
        elif self._parts:
            raise ProtocolViolation(protocol.CLOSE_PROTOCOL_ERROR, "expected a continuation")
        else:
            if opcode not in (protocol.OP_TEXT, protocol.OP_BINARY):
                raise ProtocolViolation(protocol.CLOSE_PROTOCOL_ERROR, "unknown opcode")
            self._parts_op = opcode
        if not fin:
            # The byte limit alone lets empty continuation frames grow the list without
            # bound; browsers never fragment a chat frame this finely.
            if len(self._parts) >= self.max_fragments:
                raise ProtocolViolation(protocol.CLOSE_TOO_BIG, "too many fragments")
            self._parts.append(payload)
            self._parts_len += len(payload)
            return
        if self._parts:
            self._parts.append(payload)
            payload = b"".join(self._parts)
            self._parts = []
            self._parts_len = 0
        if self._parts_op == protocol.OP_BINARY:
            raise ProtocolViolation(protocol.CLOSE_UNSUPPORTED, "binary frames are not supported")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolViolation(protocol.CLOSE_INVALID_DATA, "invalid UTF-8") from None
        if self._inbox is None:
            self._inbox = deque()
        self._inbox.append(text)
        if self._handler is None:
            self._handler = gevent.spawn(self._drain)

    def _drain(self) -> None:
        # One short-lived greenlet per busy connection: frames of a connection are
        # handled in order, and an idle connection holds no greenlet.
        try:
            inbox = self._inbox
            while inbox and not self.closed:
                text = inbox.popleft()
                try:
                    self.on_text(self, text)
                except Exception:
                    log.exception("flask-chat: error handling a frame from %s", self.id)
        finally:
            self._handler = None

    # -- closing -------------------------------------------------------------------

    def close(self, code: int = protocol.CLOSE_NORMAL, reason: str = "") -> None:
        """Send a close frame; the connection ends when the peer closes (or in 5 s)."""
        if self.closed or self._closing:
            return
        self.write(protocol.close_frame(code, reason))
        self._closing = True
        if not self.closed and not self._backlog:
            self._finish_close()

    def _finish_close(self) -> None:
        # Half-close and wait for the peer's FIN: closing with unread input would send
        # a RST that can destroy the close frame before the client reads it.
        try:
            self.sock.shutdown(1)  # SHUT_WR
        except OSError:
            self.abort()
            return
        timer = get_hub().loop.timer(5.0)
        timer.start(self.abort)
        self.data["close_timer"] = timer

    def abort(self) -> None:
        """Cut the connection now (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self._reader.stop()
        if self._writer is not None:
            self._writer.stop()
        timer = self.data.pop("close_timer", None)
        if timer is not None:
            timer.stop()
        self._backlog = None
        self._inbox = None
        # shutdown() acts on the connection, not on this descriptor: the peer sees the
        # end at once even if another descriptor of the socket (the server's, before
        # the websocket took it over) is still open somewhere.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # best effort: the peer may be gone already (ENOTCONN)
        try:
            self.sock.close()
        except OSError:
            pass  # closing is best effort too
        try:
            self.on_close(self)
        except Exception:
            log.exception("flask-chat: error cleaning up connection %s", self.id)

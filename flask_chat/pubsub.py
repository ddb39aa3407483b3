"""The process's one Redis subscriber connection, read with hiredis.

redis-py's PubSub layer costs 10-17 µs per message; reading replies with
``hiredis.Reader`` straight off the socket costs 1-2 µs, and every chat delivery passes
through here. The subscriber keeps the set of channels it *should* be subscribed to, so
after Redis goes away it reconnects (capped, jittered backoff) and resubscribes all of
them by itself.

Runs under gevent: :meth:`Subscriber.run` is the one greenlet that reads;
:meth:`subscribe` and :meth:`unsubscribe` may be called from any greenlet.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable

import gevent
import hiredis
from gevent.event import Event
from gevent.lock import Semaphore
from redis.connection import parse_url
from redis.crc import key_slot

log = logging.getLogger("flask_chat.pubsub")

_PING = b"*1\r\n$4\r\nPING\r\n"

OnMessage = Callable[[bytes, bytes], None]


def encode_command(*args: bytes | str) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class Subscriber:
    """Subscribe to channels on one connection; hand every message to ``on_message``.

    ``sharded``: Redis 7's sharded pub/sub (SSUBSCRIBE, ``smessage``) on one node of a
    cluster, for :class:`flask_chat.cluster.ClusterSubscriber`, which also passes
    ``on_trouble``: called whenever the connection fails or is lost, when the server
    drops a channel this subscriber still wants (a ``sunsubscribe`` nobody asked for:
    its slot moved) and on an error reply (MOVED): the slot map must be looked at again.
    ``on_dropped`` gets the channels the server dropped or refused (they are no longer
    in :attr:`channels`).
    """

    #: Channels per SUBSCRIBE command when resubscribing many at once.
    BATCH = 500

    def __init__(
        self,
        url: str,
        on_message: OnMessage,
        on_reconnect: Callable[[], None] | None = None,
        max_backoff: float = 5.0,
        sharded: bool = False,
        on_trouble: Callable[[], None] | None = None,
        on_dropped: Callable[[list[bytes]], None] | None = None,
    ) -> None:
        self.url = url
        self.on_message = on_message
        self.on_reconnect = on_reconnect
        self.max_backoff = max_backoff
        self.on_trouble = on_trouble
        self.on_dropped = on_dropped
        self._sharded = sharded
        self._subscribe = b"SSUBSCRIBE" if sharded else b"SUBSCRIBE"
        self._unsubscribe = b"SUNSUBSCRIBE" if sharded else b"UNSUBSCRIBE"
        self._message = b"smessage" if sharded else b"message"
        self._dropped = b"sunsubscribe" if sharded else b"unsubscribe"
        self.channels: set[bytes] = set()
        #: Unsubscribes sent on the current connection and not answered yet: their
        #: replies are ours, not drops, even for a channel wanted again since.
        self._unsubscribing: Counter[bytes] = Counter()
        self.connected = False
        self.reconnects = 0
        #: When the connection was last lost (time.time()), for callers that must
        #: replay what was published while nobody listened.
        self.disconnected_at: float | None = None
        #: What to run at each PING reply, in the order the PINGs were sent (and
        #: whether to run it anyway when the connection is lost first).
        self._pongs: deque[tuple[Callable[[], None], bool]] = deque()
        #: A replay (``on_reconnect``) is due on the next connect.
        self._confirm_pending = False
        self._sock: socket.socket | None = None
        self._write_lock = Semaphore()
        self._stopping = False
        self._ready = Event()

    # -- subscriptions -------------------------------------------------------------

    def subscribe(self, channels: Iterable[bytes]) -> Event | None:
        """Subscribe to the channels not subscribed yet. Returns an event set once Redis
        has them subscribed (None: nothing new), for callers that read what was
        published before and must not miss what comes after."""
        new = [c for c in channels if c not in self.channels]
        if not new:
            return None
        self.channels.update(new)
        self._send_batched(self._subscribe, new)
        return self.confirm()

    def confirm(self) -> Event:
        """An event set once Redis has answered everything sent before it: the reply to
        a PING comes after the replies to every command before it. Also set when the
        connection is down or lost (resubscribing on reconnect is followed by the
        ``on_reconnect`` hook, whose job is to replay what was missed)."""
        done = Event()
        if not self._ping(done.set, on_loss=True):
            done.set()
        return done

    def _ping(self, callback: Callable[[], None], on_loss: bool) -> bool:
        sock = self._sock
        if sock is None:
            return False
        with self._write_lock:
            # Appended and sent under one lock, so pongs come back in this order.
            self._pongs.append((callback, on_loss))
            try:
                sock.sendall(_PING)
            except OSError:
                pass  # the reader sees the loss and runs the callbacks that want it
        return True

    @property
    def confirming(self) -> bool:
        """Whether a replay confirmation is still to come (a PING sent, or due on connect)."""
        return self._confirm_pending or any(not on_loss for _, on_loss in self._pongs)

    def replay_when_confirmed(self) -> None:
        """Call ``on_reconnect`` once every subscription sent so far is in place (a
        PING's reply comes after theirs), or on the next connect if not connected."""
        if not self._ping(self._reconnected, on_loss=False):
            self._confirm_pending = True  # a first connection confirms too, then

    def unsubscribe(self, channels: Iterable[bytes]) -> None:
        gone = [c for c in channels if c in self.channels]
        if not gone:
            return
        self.channels.difference_update(gone)
        if self._sock is not None:
            self._unsubscribing.update(gone)
        self._send_batched(self._unsubscribe, gone)

    def _send_batched(self, command: bytes, channels: list[bytes]) -> None:
        if self._sock is None:
            return  # sent on (re)connect
        if self._sharded:
            # One SSUBSCRIBE may only name channels of one slot: one command per slot,
            # all in one write.
            by_slot: dict[int, list[bytes]] = {}
            for channel in channels:
                by_slot.setdefault(key_slot(channel), []).append(channel)
            self._send(b"".join(
                encode_command(command, *group[i : i + self.BATCH])
                for group in by_slot.values()
                for i in range(0, len(group), self.BATCH)
            ))
            return
        for i in range(0, len(channels), self.BATCH):
            self._send(encode_command(command, *channels[i : i + self.BATCH]))

    def _send(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            with self._write_lock:
                sock.sendall(data)
        except OSError:
            # The reader sees the broken connection too and reconnects, resubscribing
            # from self.channels, so nothing is lost by dropping this write.
            pass

    def wait_connected(self, timeout: float) -> bool:
        return bool(self._ready.wait(timeout))

    # -- the read loop -------------------------------------------------------------

    def _connect(self) -> socket.socket:
        opts = parse_url(self.url)  # type: ignore[no-untyped-call]
        timeout = 5.0
        if "path" in opts:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(opts["path"])
        else:
            sock = socket.create_connection(
                (opts.get("host", "localhost"), opts.get("port", 6379)), timeout=timeout
            )
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.url.startswith("rediss://"):
                sock = ssl.create_default_context().wrap_socket(
                    sock, server_hostname=opts.get("host")
                )
        sock.settimeout(None)
        password = opts.get("password")
        if password:
            username = opts.get("username")
            args = [b"AUTH", username, password] if username else [b"AUTH", password]
            sock.sendall(encode_command(*args))
            reader = hiredis.Reader()
            while True:
                reader.feed(sock.recv(4096))
                reply = reader.gets()
                if reply is not False:
                    break
            if isinstance(reply, Exception):
                sock.close()
                raise ConnectionError(f"Redis AUTH failed: {reply}")
        return sock

    def run(self) -> None:
        """Read forever (until :meth:`stop`), reconnecting whenever Redis goes away."""
        failures = 0
        while not self._stopping:
            try:
                sock = self._connect()
            except OSError as exc:
                failures += 1
                self._trouble()
                delay = min(self.max_backoff, 0.05 * 2**failures) * random.uniform(0.5, 1.0)
                if failures == 1:
                    log.warning("flask-chat: Redis subscriber cannot connect (%s); retrying", exc)
                gevent.sleep(delay)
                continue
            if failures:
                log.warning("flask-chat: Redis subscriber reconnected after %d attempts", failures)
                self.reconnects += 1
            failures = 0
            self._sock = sock
            self._unsubscribing.clear()
            self.connected = True
            self._send_batched(self._subscribe, list(self.channels))
            if (self.reconnects or self._confirm_pending) and self.on_reconnect is not None:
                self._confirm_pending = False
                # Redis answers in order: once this PING's reply is read, every channel
                # above is subscribed, so a replay read after it cannot miss an event
                # that neither it nor the live stream carries.
                self._ping(self._reconnected, on_loss=False)
            self._ready.set()
            try:
                self._read(sock)
            except OSError as exc:
                if not self._stopping:
                    log.warning("flask-chat: Redis subscriber lost its connection (%s)", exc)
            finally:
                self.disconnected_at = time.time()
                pending = list(self._pongs)
                self._pongs.clear()
                for callback, on_loss in pending:
                    if on_loss:
                        callback()
                self.connected = False
                self._ready.clear()
                self._sock = None
                sock.close()
            if not self._stopping:
                self._trouble()
            failures = 1
            if not self._stopping:
                gevent.sleep(random.uniform(0.02, 0.1))

    def _read(self, sock: socket.socket) -> None:
        reader = hiredis.Reader()
        on_message = self.on_message
        kind = self._message
        while True:
            data = sock.recv(262144)
            if not data:
                raise ConnectionResetError("Redis closed the connection")
            reader.feed(data)
            while True:
                reply = reader.gets()
                if reply is False:
                    break
                if isinstance(reply, list) and reply and reply[0] == kind:
                    try:
                        on_message(reply[1], reply[2])
                    except Exception:
                        log.exception("flask-chat: error while delivering a pub/sub message")
                elif isinstance(reply, Exception):
                    log.warning("flask-chat: Redis subscriber got an error reply: %s", reply)
                    self._refused(str(reply))
                elif (
                    isinstance(reply, list)
                    and reply[:1] == [self._dropped]
                    and not self._answered_unsubscribe(reply[1])
                    and reply[1] in self.channels
                ):
                    # Dropped by the server while still wanted (sharded: the slot moved).
                    self._drop([reply[1]])
                elif isinstance(reply, list) and reply[:1] == [b"pong"] and self._pongs:
                    callback, _ = self._pongs.popleft()
                    callback()

    def _reconnected(self) -> None:
        if self.on_reconnect is not None:
            try:
                self.on_reconnect()
            except Exception:
                log.exception("flask-chat: the subscriber's reconnect hook failed")

    def _refused(self, error: str) -> None:
        """An error reply. ``MOVED <slot> <node>`` to an SSUBSCRIBE: this node does not
        serve that slot (any more), so its channels are not subscribed here."""
        parts = error.split()
        if self._sharded and len(parts) == 3 and parts[0] == "MOVED" and parts[1].isdigit():
            slot = int(parts[1])
            self._drop([c for c in self.channels if key_slot(c) == slot])
        else:
            self._trouble()

    def _answered_unsubscribe(self, channel: bytes) -> bool:
        """Whether this unsubscribe reply answers one of ours (else the server dropped
        the channel)."""
        if self._unsubscribing[channel] <= 0:
            return False
        self._unsubscribing[channel] -= 1
        if not self._unsubscribing[channel]:
            del self._unsubscribing[channel]
        return True

    def _drop(self, channels: list[bytes]) -> None:
        """Channels the server does not hold for us: forget them, and say so."""
        self.channels.difference_update(channels)
        if self.on_dropped is not None:
            try:
                self.on_dropped(channels)
            except Exception:
                log.exception("flask-chat: the subscriber's dropped-channels hook failed")
        self._trouble()

    def _trouble(self) -> None:
        if self.on_trouble is not None:
            try:
                self.on_trouble()
            except Exception:
                log.exception("flask-chat: the subscriber's trouble hook failed")

    def stop(self) -> None:
        self._stopping = True
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed: stopping is all we wanted

"""socket.io 0.8's polling transports (``xhr-polling``, ``jsonp-polling``) without sticky
sessions: every polling session lives in Redis, so any instance answers any poll or POST.

One instance at a time *holds* a session: the one that answered its first poll. It
keeps a stand-in connection (:class:`PollingConnection`) in its hub and legacy router,
like a websocket, so publishes, subscriptions, events and logout work unchanged; what
the router writes to it goes to the session's queue in Redis. A poll on any instance
takes what is queued, or waits for it (:meth:`PollingSessions.poll`). A POST on any
instance appends the client's packets to the session's inbox and wakes the holder,
which handles them in order. Wakes go through one pub/sub channel per instance, on the
hub's existing subscriber: nothing is subscribed per poll.

A session ends as a socket.io 0.8 session did: the client's disconnect packet, no
request for the close timeout (25 s) after the last poll, the user logging out, the
holder draining, or a queue over its budget (a client that stopped reading). Its
unsubscribe events are published as for a websocket; when the holder dies, the
session's keys expire and the reaper publishes them. Either way the client's next poll
is told ``7:::1+0`` ("client not handshaken", advice: reconnect), and it reconnects.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
from flask import Flask
from gevent.event import Event
from redis.exceptions import RedisError

from flask_chat import protocol as chat_protocol
from flask_chat.connection import Connection

from .keys import BridgeKeys
from .metrics import BRIDGE_METRICS
from .protocol import CLOSE_TIMEOUT
from .router import LEGACY

if TYPE_CHECKING:
    import redis

    from flask_chat.hub import Hub
    from flask_chat.state import ChatState

log = logging.getLogger("flask_chat_bridge.polling")

TRANSPORTS = ("xhr-polling", "jsonp-polling")

#: socket.io 0.8's "polling duration": a poll with nothing to say answers a noop after
#: this, well within the client's close timeout (25 s), which every answer re-arms.
POLL_DURATION = 20.0
#: How often the holder renews its sessions' keys, ends the ones nobody polled for the
#: close timeout, and reads inboxes whose wake it may have missed.
CHECK_INTERVAL = 5.0
#: A session's keys outlive three missed renewals: its holder is dead after that.
SESSION_TTL_MS = int(3 * CHECK_INTERVAL * 1000)
#: A waiting poll looks at its queue this often, should a wake be lost (the subscriber
#: reconnecting).
RECHECK = 5.0
#: Packets waiting for a client that has not polled (the byte budget is
#: ``CHAT_WS_MAX_QUEUE_BYTES``, a websocket's backlog), and packets POSTed and not yet
#: handled: over either, the session ends (queue) or the POST is refused (inbox).
MAX_QUEUED = 10_000
MAX_INBOX = 1_000

NOOP = "8::"
CONNECT = "1::"
DISCONNECT = "0::"
#: socket.io 0.8's error packet for an unknown session: reason 1 ("client not
#: handshaken"), advice 0 ("reconnect").
NOT_HANDSHAKEN = "7:::1+0"

_FRAME = "\ufffd"
_RECONNECT_NOTICE = chat_protocol.reconnect().decode()

# Outcomes of the poll and post scripts.
GONE, REFUSED, OK, FULL = 0, 1, 2, 3


# -- the payload framing (socket.io 0.8 lib/parser.js) ---------------------------------


def _units(text: str) -> int:
    """JavaScript's ``string.length``: UTF-16 code units, which is what the framing
    counts (a character outside the BMP is two)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def encode_payload(packets: list[str]) -> str:
    """``parser.encodePayload``: one packet as it is, several framed as
    ``\\ufffd<length>\\ufffd<packet>``."""
    if len(packets) == 1:
        return packets[0]
    return "".join(f"{_FRAME}{_units(p)}{_FRAME}{p}" for p in packets)


def decode_payload(data: str, limit: int = MAX_INBOX) -> list[str]:
    """``parser.decodePayload``: the packets of a POST body (at most ``limit``; a length
    that is not a number ends the payload, where JavaScript would read garbage)."""
    if not data.startswith(_FRAME):
        return [data] if data else []
    units = data.encode("utf-16-le", "surrogatepass")
    count = len(units) // 2
    mark = ord(_FRAME)
    packets: list[str] = []
    i = 1
    while i < count and len(packets) < limit:
        start = i
        while i < count and units[2 * i] | (units[2 * i + 1] << 8) != mark:
            i += 1
        digits = units[2 * start : 2 * i].decode("utf-16-le", "surrogatepass")
        if i >= count or not digits.isascii() or not digits.isdigit():
            break
        length = int(digits)
        body = units[2 * (i + 1) : 2 * (i + 1 + length)]
        packets.append(body.decode("utf-16-le", "surrogatepass"))
        i += 1 + length + 1  # past the packet and the next frame mark
    return packets


def _ws_text(frame: bytes) -> str | None:
    """The text of a server websocket frame (as the hub and the router write them), or
    None for a control frame (pings, closes): a polling client gets the text alone."""
    if len(frame) < 2 or frame[0] & 0x0F != 0x1:
        return None
    length = frame[1] & 0x7F
    head = 2 + {126: 2, 127: 8}.get(length, 0)
    return frame[head:].decode("utf-8", "replace")


# -- the Redis side ---------------------------------------------------------------------

# Every script declares KEYS = BridgeKeys.poll_keys(sid): session hash, queue, inbox,
# waiter. Lists are passed and returned whole, never unpacked in one call (Lua's stack
# is limited), and pushed in chunks.

#: A poll. ARGV: user ("" anonymous), transport, now, seen (when this poll will be
#: over: now, or now + the poll's wait when it registers), waiter channel ("" none),
#: waiter TTL (ms). Returns {GONE} | {REFUSED} | {OK, packets}; a poll that took
#: packets resets the byte count. Guarantee: a packet is taken by exactly one poll, and
#: a push after a registration finds the waiter, so no wake falls between the two.
_POLL = """
local s = redis.call('HMGET', KEYS[1], 'user', 'transport', 'seen')
if not s[2] then return {0} end
if s[2] ~= ARGV[2] or (s[1] ~= '' and s[1] ~= ARGV[1]) then return {1} end
local packets = redis.call('LRANGE', KEYS[2], 0, -1)
local seen = ARGV[3]
if #packets > 0 then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'bytes', 0)
elseif ARGV[5] ~= '' then
  redis.call('SET', KEYS[4], ARGV[5], 'PX', ARGV[6])
  seen = ARGV[4]
end
if tonumber(seen) > tonumber(s[3] or '0') then redis.call('HSET', KEYS[1], 'seen', seen) end
return {2, packets}
"""

#: The holder queues packets for the client. ARGV: max bytes, max packets, sid, TTL
#: (ms), packets... Returns 0, -1 (no such session) or -2 (over the budget: nothing
#: queued). Wakes the poll waiting, wherever it is.
_PUSH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local bytes = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0')
for i = 5, #ARGV do bytes = bytes + #ARGV[i] end
if bytes > tonumber(ARGV[1]) or redis.call('LLEN', KEYS[2]) + #ARGV - 4 > tonumber(ARGV[2]) then
  return -2
end
for i = 5, #ARGV, 500 do
  redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 499, #ARGV)))
end
redis.call('HSET', KEYS[1], 'bytes', bytes)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
local waiter = redis.call('GET', KEYS[4])
if waiter then redis.call('PUBLISH', waiter, 'p:' .. ARGV[3]) end
return 0
"""

#: A client's POST. ARGV: user, transport, now, max inbox, sid, TTL (ms), packets...
#: Returns {GONE} | {REFUSED} | {FULL} | {OK}, and wakes the holder.
_POST = """
local s = redis.call('HMGET', KEYS[1], 'user', 'transport', 'seen', 'holder')
if not s[2] then return {0} end
if s[2] ~= ARGV[2] or (s[1] ~= '' and s[1] ~= ARGV[1]) then return {1} end
if redis.call('LLEN', KEYS[3]) + #ARGV - 6 > tonumber(ARGV[4]) then return {3} end
for i = 7, #ARGV, 500 do
  redis.call('RPUSH', KEYS[3], unpack(ARGV, i, math.min(i + 499, #ARGV)))
end
redis.call('PEXPIRE', KEYS[3], ARGV[6])
if tonumber(ARGV[3]) > tonumber(s[3] or '0') then redis.call('HSET', KEYS[1], 'seen', ARGV[3]) end
redis.call('PUBLISH', s[4], 'i:' .. ARGV[5])
return {2}
"""

#: The end of a session. ARGV: sid. Wakes its waiting poll, which answers
#: NOT_HANDSHAKEN at once.
_END = """
local waiter = redis.call('GET', KEYS[4])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
if waiter then redis.call('PUBLISH', waiter, 'p:' .. ARGV[1]) end
return 1
"""


class PollStore:
    """The polling sessions' state in Redis (keys: :class:`BridgeKeys`)."""

    def __init__(self, client: redis.Redis, keys: BridgeKeys, max_bytes: int) -> None:
        self.client = client
        self.keys = keys
        self.max_bytes = max_bytes
        self._poll = client.register_script(_POLL)
        self._push = client.register_script(_PUSH)
        self._post = client.register_script(_POST)
        self._end = client.register_script(_END)

    def claim_handshake(self, sid: str) -> bool:
        """Use up a handshake: True for the one request that did."""
        return self.client.getdel(self.keys.handshake(sid)) is not None

    def create(self, sid: str, user: str, transport: str, holder: str) -> None:
        key = self.keys.poll_session(sid)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, mapping={"user": user, "transport": transport, "holder": holder,
                                "seen": repr(time.time()), "bytes": 0})
        pipe.pexpire(key, SESSION_TTL_MS)
        pipe.execute()

    def poll(self, sid: str, user: str, transport: str, waiter: str = "",
             wait: float = 0.0) -> tuple[int, list[str]]:
        now = time.time()
        result = self._poll(
            keys=self.keys.poll_keys(sid),
            args=[user, transport, repr(now), repr(now + wait), waiter,
                  int((wait + 1) * 1000)],
        )
        return int(result[0]), list(result[1]) if len(result) > 1 else []

    def post(self, sid: str, user: str, transport: str, packets: list[str]) -> int:
        result = self._post(
            keys=self.keys.poll_keys(sid),
            args=[user, transport, repr(time.time()), MAX_INBOX, sid, SESSION_TTL_MS, *packets],
        )
        return int(result[0])

    def push(self, batches: list[tuple[str, list[str]]]) -> list[int]:
        """Queue each session's packets, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for sid, packets in batches:
            self._push(keys=self.keys.poll_keys(sid),
                       args=[self.max_bytes, MAX_QUEUED, sid, SESSION_TTL_MS, *packets],
                       client=pipe)
        return [int(r) for r in pipe.execute()]

    def take_inbox(self, sid: str) -> list[str]:
        key = self.keys.poll_inbox(sid)
        pipe = self.client.pipeline(transaction=True)
        pipe.lrange(key, 0, -1)
        pipe.delete(key)
        packets: list[str] = pipe.execute()[0]
        return packets

    def renew(self, sids: list[str]) -> list[tuple[bool, float, int]]:
        """Keep the held sessions' keys alive: (exists, last activity, inbox length)."""
        pipe = self.client.pipeline(transaction=False)
        for sid in sids:
            session, queue, inbox, _ = self.keys.poll_keys(sid)
            pipe.pexpire(session, SESSION_TTL_MS)
            pipe.pexpire(queue, SESSION_TTL_MS)
            pipe.pexpire(inbox, SESSION_TTL_MS)
            pipe.hget(session, "seen")
            pipe.llen(inbox)
        results = pipe.execute()
        return [(bool(results[i]), float(results[i + 3] or 0), int(results[i + 4]))
                for i in range(0, len(results), 5)]

    def end(self, sid: str) -> None:
        self._end(keys=self.keys.poll_keys(sid), args=[sid])


# -- the holder's stand-in connection ---------------------------------------------------


class PollingConnection(Connection):
    """A polling session as its holder's hub and router see it: a legacy connection
    whose writes go to the session's queue in Redis (through the process's flusher, so
    that the hub's delivery loop never waits on Redis). It has no socket: only what the
    hub and the router use of a :class:`Connection` is here."""

    __slots__ = ("sessions", "transport", "pending", "pending_bytes", "_reading", "_again")

    def __init__(self, sessions: PollingSessions, sid: str, user_id: int | None,
                 transport: str) -> None:
        # No Connection.__init__: it takes over a socket, and there is none.
        self.sessions = sessions
        self.transport = transport
        self.id = sid
        self.user_id = 0  # an add-on's connection: no presence, no catch-up (as legacy ones)
        self.channels: set[bytes] = set()
        self.data: dict[str, Any] = {LEGACY: True, "user_id": user_id}
        self.closed = False
        self._closing = False
        self.pending: list[str] = []
        self.pending_bytes = 0
        self._reading = False
        self._again = False

    # The hub cuts connections silent for 2.5 ping intervals; a polling client's
    # liveness is its requests, which the holder's checker follows instead.
    @property
    def last_seen(self) -> float:
        return time.monotonic()

    @last_seen.setter
    def last_seen(self, value: float) -> None:
        pass

    def start(self, initial: bytes = b"") -> None:
        pass

    def write(self, frame: bytes) -> None:
        if self.closed:
            return
        text = _ws_text(frame)
        if text is None or text == _RECONNECT_NOTICE:
            return  # pings, and the draining notice that means nothing to socket.io
        self.pending.append(text)
        self.pending_bytes += len(text)
        self.sessions.dirty(self)

    def send_text(self, payload: bytes) -> None:
        self.write(chat_protocol.ws_frame(payload))

    def deliver(self, frame: bytes) -> None:
        """flask-chat's live events mean nothing to socket.io (see LegacyConnection)."""

    def hold(self) -> None:
        pass

    def release(self, replayed: Any = ()) -> None:
        pass

    def close(self, code: int = chat_protocol.CLOSE_NORMAL, reason: str = "") -> None:
        self.sessions.end(self, reason or f"closed ({code})")

    def abort(self) -> None:
        self.sessions.end(self, "aborted")

    def input(self) -> None:
        """The inbox has packets: handle them, in order, in a greenlet of its own."""
        if self._reading:
            self._again = True
            return
        self._reading = True
        gevent.spawn(self._read)

    def _read(self) -> None:
        try:
            again = True
            while again and not self.closed:
                self._again = False
                for text in self.sessions.store.take_inbox(self.id):
                    if self.closed:
                        break
                    self.sessions.handle(self, text)
                again = self._again
        except RedisError:
            log.warning("flask-chat bridge: could not read the inbox of polling session %s "
                        "(read again within %g s)", self.id, CHECK_INTERVAL, exc_info=True)
        finally:
            self._reading = False


# -- one instance's share -----------------------------------------------------------------


class PollingSessions:
    """This process's polling sessions: those it holds, and the polls waiting here."""

    def __init__(self, app: Flask, state: ChatState, instance_id: str,
                 on_packet: Callable[[Connection, str], None]) -> None:
        self.app = app
        self.state = state
        self.keys = BridgeKeys(state.keys.prefix)
        self.store = PollStore(state.redis, self.keys, state.config.max_ws_queue)
        self.wake_channel = self.keys.wake_channel(instance_id)
        self.on_packet = on_packet
        self.hub: Hub | None = None
        self.held: dict[str, PollingConnection] = {}
        self.waiting: dict[str, Event] = {}
        self._dirty: dict[str, PollingConnection] = {}
        self._flush = Event()

    def attach(self, hub: Hub) -> None:
        """A hub listener: wakes come on this instance's channel, through the hub."""
        if self.hub is hub:
            return
        self.hub = hub
        hub.handle_channel(self.wake_channel.encode(), self._on_wake)
        gevent.spawn(self._flusher)
        gevent.spawn(self._checker)

    def _on_wake(self, payload: bytes) -> None:
        # In the hub's delivery loop: nothing here may wait.
        kind, _, sid = payload.decode("ascii", "replace").partition(":")
        if kind == "p":
            event = self.waiting.get(sid)
            if event is not None:
                event.set()
        elif kind == "i":
            conn = self.held.get(sid)
            if conn is not None:
                conn.input()

    # -- requests (any instance) ---------------------------------------------------

    def poll(self, sid: str, user: int | None, transport: str) -> list[str] | None:
        """A GET: the packets for the client (a noop after the polling duration), or
        None when there is no such session (the client must reconnect). Raises
        PermissionError for a request of another user or transport."""
        who = str(user or "")
        status, packets = self.store.poll(sid, who, transport)
        if status == GONE:
            if self.store.claim_handshake(sid):
                self._open(sid, user, transport)
                return [CONNECT]
            return None
        if status == REFUSED:
            raise PermissionError(sid)
        if packets:
            return packets
        event = Event()
        superseded = self.waiting.get(sid)
        if superseded is not None:
            superseded.set()  # one poll per session: the older one answers its noop now
        self.waiting[sid] = event
        deadline = time.monotonic() + POLL_DURATION
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not self._waits(sid, event) or self._draining():
                    return [NOOP]
                # Cleared before the poll registers: a wake that comes while the script
                # runs is kept.
                event.clear()
                status, packets = self.store.poll(sid, who, transport, self.wake_channel,
                                                  min(left, RECHECK))
                if status == GONE:
                    return None
                if status == REFUSED:
                    raise PermissionError(sid)
                if packets:
                    return packets
                recheck = time.monotonic() + min(left, RECHECK)
                # Short waits, so that a draining instance lets its polls go at once.
                while not event.is_set() and not self._draining():
                    remaining = recheck - time.monotonic()
                    if remaining <= 0:
                        break
                    event.wait(min(remaining, 1.0))
        finally:
            if self.waiting.get(sid) is event:
                del self.waiting[sid]

    def post(self, sid: str, user: int | None, transport: str, packets: list[str]) -> int:
        """A POST: the packets go to the holder. GONE, REFUSED, FULL or OK."""
        return self.store.post(sid, str(user or ""), transport, packets)

    def _waits(self, sid: str, event: Event) -> bool:
        """Whether this poll is still the one waiting here for ``sid``."""
        return self.waiting.get(sid) is event

    def _draining(self) -> bool:
        return self.hub is not None and self.hub.draining

    # -- sessions held here --------------------------------------------------------

    def _open(self, sid: str, user: int | None, transport: str) -> None:
        hub = self.hub
        assert hub is not None, "attach() first (get_hub runs the hub listeners)"
        conn = PollingConnection(self, sid, user, transport)
        self.store.create(sid, str(user or ""), transport, self.wake_channel)
        self.held[sid] = conn
        # A logged-in session reads private channels: it ends when the user logs out.
        hub.add(conn, [hub.user_channel(user)] if user else [])
        BRIDGE_METRICS.polling_sessions.inc()

    def handle(self, conn: PollingConnection, text: str) -> None:
        with self.app.app_context():
            try:
                self.on_packet(conn, text)
            except Exception:
                log.exception("flask-chat bridge: error handling a packet of %s", conn.id)

    def end(self, conn: PollingConnection, reason: str) -> None:
        """End a session held here: as a websocket's close for the hub and the router
        (unsubscribe events), then its keys, waking its poll wherever it waits."""
        if conn.closed:
            return
        conn.closed = True
        log.debug("flask-chat bridge: polling session %s ended: %s", conn.id, reason)
        self.held.pop(conn.id, None)
        self._dirty.pop(conn.id, None)
        BRIDGE_METRICS.polling_sessions.dec()
        if self.hub is not None:
            self.hub.remove(conn)
        if self._draining():
            # The drain runs in a greenlet of its own, and the process exits right
            # after it: no spawned greenlet would run. The client's next poll, on
            # another instance, is told to reconnect at once.
            self._forget(conn.id)
        else:
            gevent.spawn(self._forget, conn.id)  # never wait in the hub's delivery loop

    def _forget(self, sid: str) -> None:
        try:
            self.store.end(sid)
        except RedisError:
            # Its keys expire without renewals; the client's next poll reconnects then.
            log.warning("flask-chat bridge: could not end polling session %s", sid,
                        exc_info=True)

    def dirty(self, conn: PollingConnection) -> None:
        self._dirty[conn.id] = conn
        self._flush.set()

    def _flusher(self) -> None:
        """Write what the router wrote to held sessions into their queues: one round
        trip for every session written to since the last one."""
        failures = 0
        while True:
            self._flush.wait()
            self._flush.clear()
            batch = [c for c in self._dirty.values() if not c.closed and c.pending]
            self._dirty.clear()
            if not batch:
                continue
            taken = [(c, c.pending, c.pending_bytes) for c in batch]
            for conn in batch:
                conn.pending, conn.pending_bytes = [], 0
            try:
                results = self.store.push([(c.id, packets) for c, packets, _ in taken])
            except RedisError:
                failures += 1
                if failures == 1:
                    log.warning("flask-chat bridge: cannot queue packets for polling "
                                "sessions; retrying", exc_info=True)
                for conn, packets, size in taken:
                    conn.pending[:0] = packets
                    conn.pending_bytes += size
                    if conn.pending_bytes > self.store.max_bytes:
                        self._overflow(conn)
                    elif not conn.closed:
                        self._dirty[conn.id] = conn
                gevent.sleep(min(5.0, 0.05 * 2**failures))
                self._flush.set()
                continue
            failures = 0
            for (conn, _, _), result in zip(taken, results, strict=True):
                if result == -1:
                    conn.close(reason="its keys expired")
                elif result == -2:
                    self._overflow(conn)

    def _overflow(self, conn: PollingConnection) -> None:
        BRIDGE_METRICS.limited.labels("poll queue").inc()
        log.info("flask-chat bridge: ending polling session %s: its client stopped "
                 "reading (queue over %d bytes or %d packets)", conn.id,
                 self.store.max_bytes, MAX_QUEUED)
        conn.close(reason="queue over budget")

    def _checker(self) -> None:
        while True:
            gevent.sleep(CHECK_INTERVAL)
            try:
                self.check()
            except RedisError:
                log.warning("flask-chat bridge: could not renew polling sessions",
                            exc_info=True)
            except Exception:
                log.exception("flask-chat bridge: polling session check failed")

    def check(self) -> None:
        """Renew the held sessions; end those nobody polled for the close timeout."""
        conns = list(self.held.values())
        if not conns:
            return
        now = time.time()
        for conn, (exists, seen, inbox) in zip(
            conns, self.store.renew([c.id for c in conns]), strict=True
        ):
            if conn.closed:
                continue
            if not exists:
                conn.close(reason="its keys expired")
            elif now > seen + CLOSE_TIMEOUT:
                conn.close(reason="close timeout")
            elif inbox:
                conn.input()

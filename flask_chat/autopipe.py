"""One auto-pipelined Redis connection per process, for the send path.

Under gevent, every greenlet that sends a message needs one or two Redis round trips.
Through redis-py's pool each takes a connection, writes, waits and gives it back: one
``sendall`` and one ``recv`` per round trip per greenlet, and one more connection in
Redis's event loop per greenlet in flight. :class:`AutoPipe` instead queues the
commands of every greenlet that asks within one turn of the gevent loop, writes them in
one batch on one connection, and reads the replies in order, handing each caller its
own (like the hub does for pub/sub): a busy process makes a few large writes instead of
many small ones, and Redis reads them in one go.

The protocol work is redis-py's: its ``Connection`` packs the commands and reads the
replies (with hiredis). Each caller gets its replies in order, an error reply in its
place (a ``ResponseError``, not raised, as ``pipeline.execute(raise_on_error=False)``
does). A connection that breaks fails every call written on it and not answered yet
with a ``redis.ConnectionError`` (the HTTP layer answers 503, as with the pool), and the
next batch connects again.

Only for a process that gevent has monkey-patched, and only from the thread that runs
its hub (elsewhere, :func:`execute` uses a pool connection, one round trip per call), and
never for Redis Cluster, whose commands go to several nodes.
"""

from __future__ import annotations

import os
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import gevent
import redis
from gevent import monkey
from gevent.event import AsyncResult
from redis.connection import Connection
from redis.exceptions import NoScriptError, ResponseError

__all__ = ["AutoPipe", "execute", "execute_reloading", "for_client"]

Command = Sequence[Any]


class _Call:
    __slots__ = ("data", "count", "replies", "result")

    def __init__(self, data: bytes, count: int) -> None:
        self.data = data
        self.count = count
        self.replies: list[Any] = []
        self.result: AsyncResult = AsyncResult()

    def fail(self, error: BaseException) -> None:
        if not self.result.ready():
            self.result.set_exception(error)


class _Link:
    """One connection and the calls written on it, in order, that wait for replies."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.inflight: deque[_Call] = deque()
        self.reader: gevent.Greenlet | None = None
        self.dead = False


class AutoPipe:
    """Batch the commands of concurrent greenlets on one connection (see the module)."""

    def __init__(self, make_connection: Callable[[], Connection]) -> None:
        self._make_connection = make_connection
        #: Packs commands (it never connects): redis-py's packer, hiredis's if present.
        self._packer = make_connection()
        #: The (real) thread whose gevent hub runs this autopipe's greenlets.
        self._thread = _real_thread_id()
        self._queue: list[_Call] = []
        self._writer: gevent.Greenlet | None = None
        self._link: _Link | None = None
        #: Connections made so far (the first and every reconnect), for tests and metrics.
        self.connects = 0
        #: Batches written (one write each), and calls in them.
        self.batches = 0
        self.calls = 0

    @property
    def usable(self) -> bool:
        """From this thread: the autopipe's greenlets run on this thread's hub."""
        return _real_thread_id() == self._thread

    def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` (each a tuple of arguments) with whatever else is queued in
        this loop turn; return their replies in order, error replies in place."""
        if not commands:
            return []
        data = b"".join(self._packer.pack_commands(commands))  # type: ignore[no-untyped-call]
        call = _Call(data, len(commands))
        self._queue.append(call)
        if self._writer is None:
            # Started on the loop's next turn: every greenlet that runs before then adds
            # its commands to the same write.
            self._writer = gevent.spawn(self._write)
        result: list[Any] = call.result.get()
        return result

    # -- the writer and the readers ---------------------------------------------------

    def _write(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                link = self._link
                try:
                    if link is None or link.dead:
                        link = self._connect()
                    # Queued before the write: if the reader fails meanwhile, it fails
                    # these calls too (they may have reached Redis).
                    link.inflight.extend(batch)
                    if link.reader is None:
                        link.reader = gevent.spawn(self._read, link)
                    self.batches += 1
                    self.calls += len(batch)
                    data = batch[0].data if len(batch) == 1 else b"".join(c.data for c in batch)
                    link.connection.send_packed_command(  # type: ignore[no-untyped-call]
                        [data], check_health=False)
                except BaseException as exc:
                    error = _connection_error(exc)
                    if link is not None:
                        self._fail(link, error)
                    for call in batch:
                        call.fail(error)
                    if not isinstance(exc, Exception):
                        raise
        finally:
            self._writer = None
            if self._queue:  # queued after the loop's last look
                self._writer = gevent.spawn(self._write)

    def _connect(self) -> _Link:
        connection = self._make_connection()
        connection.connect()  # type: ignore[no-untyped-call]
        self.connects += 1
        self._link = _Link(connection)
        return self._link

    def _read(self, link: _Link) -> None:
        connection = link.connection
        try:
            while link.inflight and not link.dead:
                call = link.inflight[0]
                while len(call.replies) < call.count:
                    try:
                        reply = connection.read_response(disconnect_on_error=False)
                    except ResponseError as exc:
                        reply = exc
                    call.replies.append(reply)
                if link.dead:
                    break
                link.inflight.popleft()
                if not call.result.ready():
                    call.result.set(call.replies)
        except BaseException as exc:
            self._fail(link, _connection_error(exc))
            if not isinstance(exc, Exception):
                raise
        finally:
            link.reader = None
            if link.inflight and not link.dead:
                # Written while this reader was finishing: read on.
                link.reader = gevent.spawn(self._read, link)

    def _fail(self, link: _Link, error: BaseException) -> None:
        """The connection is broken: every call on it fails, the next batch reconnects."""
        if self._link is link:
            self._link = None
        if link.dead:
            return
        link.dead = True
        pending, link.inflight = list(link.inflight), deque()
        for call in pending:
            call.fail(error)
        try:
            link.connection.disconnect()  # type: ignore[no-untyped-call]
        except Exception:  # pragma: no cover - closing a broken socket
            pass

    def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            self._fail(link, redis.ConnectionError("The connection was closed."))


def _connection_error(exc: BaseException) -> BaseException:
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return exc
    if isinstance(exc, redis.RedisError) or not isinstance(exc, Exception):
        return exc
    return redis.ConnectionError(f"Redis connection lost: {exc!r}")


# -- one per client and process --------------------------------------------------------

_PIPES: weakref.WeakKeyDictionary[redis.Redis, tuple[int, AutoPipe]] = (
    weakref.WeakKeyDictionary()
)


def _patched() -> bool:
    return bool(monkey.is_module_patched("socket"))


def _real_thread_id() -> int:
    # Patched, threading's ids are greenlets'; the native thread's is what tells hubs apart.
    get_ident: Callable[[], int] = monkey.get_original("_thread", "get_ident")
    return get_ident()


def for_client(client: redis.Redis) -> AutoPipe | None:
    """The process's autopipe on ``client``'s server, when it can be used from here:
    gevent has patched this process, and this is the hub's thread. Otherwise None."""
    entry = _PIPES.get(client)
    pid = os.getpid()
    if entry is not None and entry[0] == pid:
        pipe = entry[1]
        return pipe if pipe.usable else None
    if not _patched():
        return None
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    connection_class: Any = pool.connection_class

    def make() -> Connection:
        connection: Connection = connection_class(**kwargs)
        return connection

    # A fork (an RQ work horse) gets its own: the parent's socket is not its to share.
    pipe = AutoPipe(make)
    _PIPES[client] = (pid, pipe)
    return pipe


def execute(
    client: redis.Redis, commands: Sequence[Command], pipelined: bool = True
) -> list[Any]:
    """Run ``commands`` in one round trip: on the autopipe where it can be used, else on
    a connection of ``client``'s pool. Replies in order, error replies in place.

    ``pipelined`` False: on a pool connection anyway (a command that blocks its
    connection, such as ``WAIT``, must not hold up every other greenlet's)."""
    pipe = for_client(client) if pipelined else None
    if pipe is not None:
        return pipe.execute(commands)
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        packed = connection.pack_commands(commands)  # type: ignore[no-untyped-call]
        connection.send_packed_command(packed)  # type: ignore[no-untyped-call]
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(connection.read_response())
            except ResponseError as exc:
                replies.append(exc)
    except BaseException:
        connection.disconnect()  # type: ignore[no-untyped-call]
        raise
    finally:
        pool.release(connection)
    return replies


def execute_reloading(
    client: redis.Redis,
    commands: Sequence[Command],
    load: Callable[[], object],
    pipelined: bool = True,
) -> list[Any]:
    """:func:`execute`; after NOSCRIPT (a restarted Redis, a SCRIPT FLUSH) ``load`` the
    scripts and run every command again, so each must be safe to run twice. Any other
    error reply is raised."""
    for attempt in (1, 2):
        replies = execute(client, commands, pipelined)
        errors = [r for r in replies if isinstance(r, ResponseError)]
        if not errors:
            return replies
        for error in errors:
            if not isinstance(error, NoScriptError):
                raise error
        if attempt == 2:
            raise errors[0]
        load()
    raise AssertionError("unreachable")

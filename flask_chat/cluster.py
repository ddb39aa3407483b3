"""Redis Cluster: the process's subscriber across masters, and acknowledged writes.

:class:`ClusterSubscriber` stands in for :class:`flask_chat.pubsub.Subscriber` when
``CHAT_REDIS_CLUSTER`` is on. Channels are shard channels (SSUBSCRIBE on the master
that serves the channel's slot; a channel carries its owner's hash tag), so it keeps one
hiredis connection per master that serves a channel the process needs, plus one
classic SUBSCRIBE connection (to any master) for channels without a tag, like the
Juggernaut bridge's ``juggernaut`` (classic pub/sub reaches every node of a cluster).

When a node's connection fails, or a node drops a channel (its slot moved), the slot map
is read again, and every channel whose slot has a new master is subscribed there; once
those subscriptions are confirmed, ``on_reconnect`` gets the time the old subscription
was lost, and the hub catches every connection up from a little before it.

:func:`run_acknowledged` runs a send's writes so that they are on replicas before the
send is acknowledged (``CHAT_REDIS_WAIT_REPLICAS``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit, urlunsplit

import gevent
import redis
from gevent.event import Event
from redis.client import Pipeline
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)

from .errors import Unavailable
from .pubsub import OnMessage, Subscriber
from .scripts import command

if TYPE_CHECKING:
    from .state import ChatState

log = logging.getLogger("flask_chat.cluster")


def node_url(seed: str, host: str, port: int) -> str:
    """The seed URL (scheme, credentials, options) pointed at another node."""
    parts = urlsplit(seed)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class ClusterSubscriber:
    """The interface of :class:`~flask_chat.pubsub.Subscriber`, over a whole cluster."""

    #: Seconds between looks at the slot map while a channel's master is unreachable
    #: (a failover takes the cluster's node timeout and an election).
    RETRY = 0.25
    #: Seconds after which a dropped channel is subscribed on the node that dropped it,
    #: if the slot map still names that node.
    HOMELESS_RETRY = 3.0

    def __init__(
        self,
        cluster: RedisCluster,
        seed_url: str,
        sharded_prefix: bytes,
        on_message: OnMessage,
        on_reconnect: Callable[[float | None], None] | None = None,
    ) -> None:
        self.cluster = cluster
        self.seed_url = seed_url
        self.sharded_prefix = sharded_prefix
        self.on_message = on_message
        self.on_reconnect = on_reconnect
        #: Every channel wanted, sharded and classic.
        self.channels: set[bytes] = set()
        #: node name ("host:port") -> the subscriber of its shard channels.
        self.nodes: dict[str, Subscriber] = {}
        self.classic: Subscriber | None = None
        self.reconnects = 0
        self.disconnected_at: float | None = None
        #: When each subscriber (by id) last lost its subscriptions, for the catch-up.
        self._lost_at: dict[int, float] = {}
        self._greenlets: dict[int, gevent.Greenlet] = {}
        #: Shard channels a node dropped or refused (its slot moved): channel -> (that
        #: node, when). Subscribed again once the slot map names another owner.
        self._homeless: dict[bytes, tuple[str, float]] = {}
        self._dirty = Event()
        self._stopping = False
        self._started = False

    # -- the Subscriber interface -----------------------------------------------------

    @property
    def connected(self) -> bool:
        subs = list(self.nodes.values()) + ([self.classic] if self.classic else [])
        return all(s.connected for s in subs)

    def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.connected:
            if time.monotonic() > deadline:
                return False
            gevent.sleep(0.02)
        return True

    def subscribe(self, channels: Iterable[bytes]) -> None:
        new = [c for c in channels if c not in self.channels]
        if not new:
            return
        self.channels.update(new)
        by_node: dict[str, list[bytes]] = {}
        classic: list[bytes] = []
        for channel in new:
            if channel.startswith(self.sharded_prefix):
                by_node.setdefault(self._owner(channel), []).append(channel)
            else:
                classic.append(channel)
        for name, group in by_node.items():
            self._node(name).subscribe(group)
        if classic:
            self._classic().subscribe(classic)

    def unsubscribe(self, channels: Iterable[bytes]) -> None:
        gone = [c for c in channels if c in self.channels]
        if not gone:
            return
        self.channels.difference_update(gone)
        for channel in gone:
            self._homeless.pop(channel, None)
        for sub in list(self.nodes.values()) + ([self.classic] if self.classic else []):
            mine = [c for c in gone if c in sub.channels]
            if mine:
                sub.unsubscribe(mine)

    def run(self) -> None:
        """Watch the slot map while the node subscribers read (until :meth:`stop`)."""
        self._started = True
        # A connection to every master from the start: a channel joined later is
        # subscribed at once, on a live connection, as with a single server.
        for node in cast(Any, self.cluster).get_primaries():
            self._node(str(node.name))
        for sub in list(self.nodes.values()) + ([self.classic] if self.classic else []):
            self._spawn(sub)
        while not self._stopping:
            self._dirty.wait()
            if self._stopping:
                break
            self._dirty.clear()
            try:
                settled = self._rebalance()
            except (RedisError, RedisClusterException, OSError) as exc:
                log.warning("flask-chat: cannot read the cluster's slot map (%s)", exc)
                settled = False
            if not settled:
                gevent.sleep(self.RETRY)
                self._dirty.set()

    def stop(self) -> None:
        self._stopping = True
        self._dirty.set()
        for sub in list(self.nodes.values()) + ([self.classic] if self.classic else []):
            sub.stop()

    # -- nodes ------------------------------------------------------------------------

    def _owner(self, channel: bytes) -> str:
        node = self.cluster.nodes_manager.get_node_from_slot(key_slot(channel))
        return str(node.name)

    def _make(self, host: str, port: int) -> Subscriber:
        sub: Subscriber

        def reconnected() -> None:
            self._confirmed(sub)

        name = f"{host}:{port}"

        def dropped(channels: list[bytes]) -> None:
            now = time.time()
            for channel in channels:
                if channel in self.channels:
                    self._homeless.setdefault(channel, (name, now))

        sub = Subscriber(node_url(self.seed_url, host, port), self.on_message,
                         on_reconnect=reconnected, sharded=True, on_trouble=self._trouble,
                         on_dropped=dropped)
        return sub

    def _node(self, name: str) -> Subscriber:
        sub = self.nodes.get(name)
        if sub is None:
            host, _, port = name.rpartition(":")
            sub = self.nodes[name] = self._make(host, int(port))
            if self._started:
                self._spawn(sub)
        return sub

    def _classic(self) -> Subscriber:
        if self.classic is None:
            node = cast(Any, self.cluster).get_primaries()[0]
            sub: Subscriber

            def reconnected() -> None:
                self._confirmed(sub)

            sub = Subscriber(node_url(self.seed_url, node.host, node.port), self.on_message,
                             on_reconnect=reconnected, on_trouble=self._trouble)
            self.classic = sub
            if self._started:
                self._spawn(sub)
        return self.classic

    def _spawn(self, sub: Subscriber) -> None:
        if id(sub) not in self._greenlets:
            self._greenlets[id(sub)] = gevent.spawn(sub.run)

    def _retire(self, sub: Subscriber) -> None:
        sub.stop()
        greenlet = self._greenlets.pop(id(sub), None)
        if greenlet is not None:
            greenlet.kill(block=False)
        self._lost_at.pop(id(sub), None)

    def _trouble(self) -> None:
        for sub in list(self.nodes.values()) + ([self.classic] if self.classic else []):
            if not sub.connected and id(sub) not in self._lost_at:
                self._lost_at[id(sub)] = sub.disconnected_at or time.time()
        self.disconnected_at = min(self._lost_at.values(), default=time.time())
        self._dirty.set()

    def _confirmed(self, sub: Subscriber) -> None:
        """``sub``'s subscriptions are in place again: catch up from when they were lost
        (the earliest loss not confirmed yet: a later confirmation may still be due for
        channels moved here since, and replaying a little more is harmless)."""
        lost = self._lost_at.get(id(sub))
        if not sub.confirming:
            self._lost_at.pop(id(sub), None)
        if lost is None:
            lost = sub.disconnected_at
        self.reconnects += 1
        if self.on_reconnect is not None:
            self.on_reconnect(lost)

    def _rebalance(self) -> bool:
        """Read the slot map again and move every channel to its slot's master. True when
        every wanted channel sits on a connected subscriber."""
        self.cluster.nodes_manager.initialize()
        moved: dict[str, list[bytes]] = {}
        lost_at: dict[str, float] = {}
        for name, sub in list(self.nodes.items()):
            for channel in list(sub.channels):
                owner = self._owner(channel)
                if owner != name:
                    sub.channels.discard(channel)  # its node no longer serves it
                    moved.setdefault(owner, []).append(channel)
                    lost = self._lost_at.get(id(sub), sub.disconnected_at or time.time())
                    lost_at[owner] = min(lost_at.get(owner, lost), lost)
        now = time.time()
        for channel, (refused_by, since) in list(self._homeless.items()):
            owner = self._owner(channel)
            if channel not in self.channels:
                del self._homeless[channel]
            elif owner != refused_by or now - since > self.HOMELESS_RETRY:
                # The map names a new owner (or, after a while, try the same one again:
                # a slot can come back).
                del self._homeless[channel]
                moved.setdefault(owner, []).append(channel)
                lost_at[owner] = min(lost_at.get(owner, since), since)
        for owner, channels in moved.items():
            target = self._node(owner)
            target.subscribe(channels)
            # The catch-up must reach back to when the channels' old subscription died.
            previous = self._lost_at.get(id(target))
            self._lost_at[id(target)] = min(lost_at[owner], previous or lost_at[owner])
            target.replay_when_confirmed()  # on its reply: _confirmed, then the hub's catch-up
        names = {str(n.name) for n in cast(Any, self.cluster).get_primaries()}
        for name, sub in list(self.nodes.items()):
            if not sub.channels and name not in names:
                del self.nodes[name]  # no longer a master (dead, or a replica now)
                self._retire(sub)
        for name in names:
            self._node(name)  # a master new to the map (a promoted replica)
        classic = self.classic
        if classic is not None and not classic.connected:
            current = urlsplit(classic.url).netloc.rpartition("@")[2]
            if current not in names and names:
                # Its node is no longer a master: subscribe on one that is.
                wanted = set(classic.channels)
                lost = self._lost_at.get(id(classic), classic.disconnected_at or time.time())
                self._retire(classic)
                self.classic = None
                fresh = self._classic()
                fresh.subscribe(wanted)
                self._lost_at[id(fresh)] = lost
        subs = list(self.nodes.values()) + ([self.classic] if self.classic else [])
        return not self._homeless and all(s.connected for s in subs)


# -- acknowledged writes ------------------------------------------------------------------


class NotReplicated(Unavailable):
    """Fewer replicas than ``CHAT_REDIS_WAIT_REPLICAS`` acknowledged a send's writes in
    ``CHAT_REDIS_WAIT_TIMEOUT_MS``: it is not acknowledged (it may be stored; retry it
    with the same idempotency key)."""

    def __init__(self, acknowledged: int, wanted: int) -> None:
        super().__init__(
            f"The message could not be confirmed on {wanted} Redis replica(s) "
            f"({acknowledged} acknowledged); retry it with the same idempotency key."
        )


def _command_key(args: tuple[Any, ...]) -> Any:
    """The key that routes one queued command (the writes of a send: EVALSHA with keys
    of one slot, or a command whose first argument is its key)."""
    if str(args[0]).upper() in ("EVALSHA", "EVAL"):
        return args[3]
    return args[1]


def run_acknowledged(state: ChatState, build: Callable[[Pipeline], None]) -> list[Any]:
    """Run the pipeline ``build`` queues, like ``Scripts.run``, and with
    ``CHAT_REDIS_WAIT_REPLICAS`` set, WAIT on every node it wrote to before returning.

    WAIT covers what was written on the connection that calls it (and everything before
    on that node: replication is in order), so on a cluster each node's share of the
    writes runs as a plain pipeline on that node's own connection, WAIT last. Raises
    :class:`NotReplicated` when a node's replicas fall short."""
    config = state.config
    wanted = config.wait_replicas
    if not wanted:
        return state.scripts.run(state.redis, build)
    wait = ("WAIT", wanted, config.wait_timeout_ms)
    if state.cluster is None:
        def waited(pipe: Pipeline) -> None:
            build(pipe)
            command(pipe, *wait)

        results = state.scripts.run(state.redis, waited)
        if int(results[-1]) < wanted:
            raise NotReplicated(int(results[-1]), wanted)
        return results[:-1]
    return _run_per_node(state, state.cluster, build, wait)


def _run_per_node(
    state: ChatState,
    cluster: RedisCluster,
    build: Callable[[Pipeline], None],
    wait: tuple[str, int, int],
) -> list[Any]:
    # Record the commands on a pipeline that is never executed.
    recorder = redis.Redis().pipeline(transaction=False)
    build(recorder)
    commands = [(args, options) for args, options in recorder.command_stack]
    for attempt in (1, 2, 3):
        try:
            by_node: dict[str, list[int]] = {}
            nodes: dict[str, Any] = {}
            for i, (args, _) in enumerate(commands):
                node = cast(Any, cluster).get_node_from_key(_command_key(args))
                by_node.setdefault(node.name, []).append(i)
                nodes[node.name] = node
            results: list[Any] = [None] * len(commands)
            missing_script = False
            for name, indexes in by_node.items():
                client = cluster.get_redis_connection(nodes[name])
                pipe = client.pipeline(transaction=False)
                for i in indexes:
                    args, options = commands[i]
                    cast(Any, pipe).execute_command(*args, **options)
                command(pipe, *wait)
                replies = pipe.execute(raise_on_error=False)
                for i, reply in zip(indexes, replies, strict=False):
                    if isinstance(reply, NoScriptError):
                        missing_script = True
                    elif isinstance(reply, Exception):
                        raise reply
                    results[i] = reply
                acknowledged = replies[-1]
                if isinstance(acknowledged, Exception):
                    raise acknowledged
                if not missing_script and int(acknowledged) < wait[1]:
                    raise NotReplicated(int(acknowledged), wait[1])
            if missing_script:
                # A restarted or newly promoted master: load, and run everything again
                # (each write of a send is idempotent).
                state.scripts.load(state.redis)
                continue
            return results
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
            # MOVED, a dead master: the slot map is stale. Read it again and retry.
            if attempt == 3 or not _map_may_be_stale(exc):
                raise
            try:
                cluster.nodes_manager.initialize()
            except (RedisError, RedisClusterException):
                raise exc from None
    raise NoScriptError("the scripts could not be loaded on every master")


def _map_may_be_stale(exc: Exception) -> bool:
    """A dead or demoted master, a moved slot, a cluster between two maps."""
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError, AskError,
                            ClusterDownError, TryAgainError, ReadOnlyError))

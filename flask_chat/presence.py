"""Who is online: per-connection heartbeats with a TTL in Redis.

Each live websocket has a member in ``{u:<id>}:conns`` scored by when it expires; its
instance renews it every :attr:`Presence.renew_interval` for :attr:`Presence.lease`
seconds, and every instance's reaper looks for expired users every
:attr:`Presence.reap_interval`. The three are cut from ``CHAT_PRESENCE_TTL`` so that the
documented promise holds: a killed instance's users are announced offline within the
TTL (the lease runs out at most ``lease`` after the kill, and a reaper notices within
``reap_interval`` more: 3/4 + 1/8 of the TTL, leaving 1/8 for the work itself), while a
live connection misses two renewals before it could lapse. A user is online while any
of their connections has not expired, on any instance. ``online`` (a sorted set of user
ids scored by their latest expiry) is the list to page and the place where offline is
decided: whoever removes a user from it — the instance that saw their last connection
close, once the grace is over, or any instance's reaper after a process died —
publishes the offline event, exactly once.

The grace (``CHAT_PRESENCE_GRACE``): when a user's last connection closes, their online
entry is set to expire :attr:`Presence.grace` seconds later instead of at once, and the
instance settles them when it runs out (:meth:`Presence.settle`). A connection opened
meanwhile, on any instance, renews the entry, so a page navigation — the legacy app
reconnects on every page — is neither an offline nor an online. If the instance dies
during the grace, the reapers take the entry off within ``reap_interval`` after it: the
grace is at most the lease, so that this too stays within the TTL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis
from redis.client import Pipeline

from .keys import Keys
from .scripts import queue, run_reloading

#: Remove a connection and report how many of the user's connections are still alive.
#: KEYS: [conns zset]; ARGV: [connection id, now]. Guarantee: expired members are
#: pruned in the same step, so a dead instance's connections never count as alive.
_DISCONNECT = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
return redis.call('ZCARD', KEYS[1])
"""

#: Take a user off the online list if their entry has expired and nobody renewed it.
#: KEYS: [online zset]; ARGV: [user id, now]. Returns 1 for the one caller that removed.
_REAP = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""


class Presence:
    def __init__(self, client: redis.Redis, keys: Keys, ttl: float, grace: float = 0.0) -> None:
        self.client = client
        self.keys = keys
        self.ttl = ttl
        #: How long one renewal keeps a connection alive.
        self.lease = ttl * 3 / 4
        #: How long a user whose last connection closed stays online (at most the lease).
        self.grace = min(grace, self.lease)
        #: How often an instance renews its connections (three per lease).
        self.renew_interval = ttl / 4
        #: How often an instance looks for users whose every connection lapsed.
        self.reap_interval = ttl / 8
        self._disconnect = client.register_script(_DISCONNECT)
        self._reap = client.register_script(_REAP)

    def connect(self, user_id: int, connection_id: str) -> bool:
        """Register a live connection; True if this made the user online."""
        expires = time.time() + self.lease
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.keys.connections(user_id), {connection_id: expires})
        pipe.expire(self.keys.connections(user_id), int(self.ttl * 2) + 1)
        pipe.zadd(self.keys.online(), {str(user_id): expires}, gt=True, ch=False)
        return bool(pipe.execute()[2])

    def heartbeat(self, connections: Sequence[tuple[int, str]]) -> list[int]:
        """Renew these connections; returns users who (re)appeared on the online list."""
        if not connections:
            return []
        expires = time.time() + self.lease
        pipe = self.client.pipeline(transaction=False)
        users: dict[int, None] = {}
        for user_id, connection_id in connections:
            pipe.zadd(self.keys.connections(user_id), {connection_id: expires})
            pipe.expire(self.keys.connections(user_id), int(self.ttl * 2) + 1)
            users[user_id] = None
        for user_id in users:
            pipe.zadd(self.keys.online(), {str(user_id): expires}, gt=True)
        results = pipe.execute()[2 * len(connections) :]
        return [uid for uid, added in zip(users, results, strict=True) if added]

    def release(self, user_id: int, connection_id: str) -> float | None:
        """Drop a connection. If it was the user's last live one on any instance, their
        online entry runs out after the grace: returns when (``time.time()``), for
        :meth:`settle` then; else None."""
        return self._release(user_id, connection_id, self.grace)

    def disconnect(self, user_id: int, connection_id: str) -> bool:
        """Drop a connection, without a grace; True if this made the user offline."""
        return self._release(user_id, connection_id, 0.0) is not None and bool(
            self.settle([user_id])
        )

    def _release(self, user_id: int, connection_id: str, grace: float) -> float | None:
        now = time.time()
        alive = self._disconnect(keys=[self.keys.connections(user_id)], args=[connection_id, now])
        if int(alive):
            return None
        # Lowered, not removed: a connect in the meantime (any instance) raises it again.
        expires = now + grace
        self.client.zadd(self.keys.online(), {str(user_id): expires}, xx=True)
        return expires

    def settle(self, user_ids: Sequence[int]) -> list[int]:
        """Users whose grace is over: take those off the online list who hold no live
        connection (on any instance) and whose entry nobody renewed. Returns those this
        call removed, so each is announced once."""
        return self._take_off(list(dict.fromkeys(user_ids)), time.time())

    def reap(self, batch: int = 500) -> list[int]:
        """Users whose every connection expired (their instance died): take them off the
        online list. Returns those this call removed, so each is announced once."""
        now = time.time()
        expired = [
            int(str(uid))
            for uid in self.client.zrangebyscore(
                self.keys.online(), "-inf", now, start=0, num=batch
            )
        ]
        return self._take_off(expired, now)

    def _take_off(self, user_ids: list[int], now: float) -> list[int]:
        if not user_ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for uid in user_ids:
            pipe.zrange(self.keys.connections(uid), -1, -1, withscores=True)
        latest = {
            uid: float(last[0][1]) if last else 0.0
            for uid, last in zip(user_ids, pipe.execute(), strict=True)
        }
        alive = {uid: expires for uid, expires in latest.items() if expires >= now}
        if alive:
            # A connect that raced a release (or a renewal, the reaper) may have had its
            # entry lowered after it: raise it back to the user's latest lease.
            pipe = self.client.pipeline(transaction=False)
            for uid, expires in alive.items():
                pipe.zadd(self.keys.online(), {str(uid): expires}, xx=True, gt=True)
            pipe.execute()
        candidates = [uid for uid in user_ids if uid not in alive]
        if not candidates:
            return []

        # _REAP checks the entry's expiry: a connect between the count and the removal
        # has raised it, and the user stays.
        def build(pipe: Pipeline) -> None:
            for uid in candidates:
                queue(pipe, self._reap, [self.keys.online()], [uid, now])

        return [uid for uid, removed in zip(candidates, self._run(build), strict=True) if removed]

    def _run(self, build: Callable[[Pipeline], None]) -> list[Any]:
        """A pipeline holding ``_REAP`` calls, loading the script once after NOSCRIPT (a
        restarted or newly promoted Redis); the calls are safe to run twice."""
        return run_reloading(self.client, build, lambda: self.client.script_load(_REAP))

    def live_connections(self, user_id: int) -> int:
        """How many unexpired connections the user holds, on every instance."""
        return int(self.client.zcount(self.keys.connections(user_id), f"({time.time()}", "+inf"))

    def is_online(self, user_id: int) -> bool:
        score = self.client.zscore(self.keys.online(), str(user_id))
        return score is not None and score > time.time()

    def online_ids(self, candidates: Iterable[int]) -> list[int]:
        """The subset of ``candidates`` who are online, in the given order."""
        ids = list(candidates)
        if not ids:
            return []
        now = time.time()
        scores = self.client.zmscore(self.keys.online(), [str(i) for i in ids])
        return [i for i, s in zip(ids, scores, strict=True) if s is not None and s > now]

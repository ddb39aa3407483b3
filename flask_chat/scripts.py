"""The Lua scripts behind flask-chat's atomic Redis updates, registered in one place.

Each script touches only keys it declares, all in one hash slot, so it runs unchanged
on Redis Cluster (tests/test_cluster.py checks every call site's keys). Scripts are
registered per client with ``register_script`` (EVALSHA with an automatic EVAL fallback
after a server restart).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, cast

import redis
from redis.client import Pipeline
from redis.commands.core import Script
from redis.exceptions import NoScriptError

#: Allocate the next message id. KEYS: [ids hash]. Returns {ms, seq}.
#: Guarantee: ids come out strictly increasing across every process that shares the
#: Redis server, because the server's clock and the last id are read and written in
#: one atomic step. A clock that steps back keeps the last ms and bumps seq; seq is
#: kept below 10,000 (four digits in the id) by moving on to the next ms.
NEXT_ID = """
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = redis.call('HMGET', KEYS[1], 'ms', 'seq')
local seq = 0
if last[1] then
  local last_ms = tonumber(last[1])
  if last_ms >= ms then
    ms = last_ms
    seq = tonumber(last[2]) + 1
    if seq > 9999 then
      ms = ms + 1
      seq = 0
    end
  end
end
redis.call('HSET', KEYS[1], 'ms', ms, 'seq', seq)
return {ms, seq}
"""

# The body of APPEND and DELIVER: store one message in one owner's conversation.
_STORE = """
local function store()
  if redis.call('HSETNX', KEYS[3], ARGV[2], ARGV[3]) == 0 then
    return -1
  end
  redis.call('ZADD', KEYS[2], 0, ARGV[2])
  redis.call('ZADD', KEYS[1], 'NX', ARGV[5], ARGV[1])
  local limit = tonumber(ARGV[4])
  local n = redis.call('ZCARD', KEYS[2])
  local trimmed = 0
  if limit > 0 and n > limit then
    local popped = redis.call('ZPOPMIN', KEYS[2], n - limit)
    local highest = ''
    for i = 1, #popped, 2 do
      if ARGV[7] == '1' then
        local body = redis.call('HGET', KEYS[3], popped[i])
        redis.call('HSET', KEYS[5], ARGV[1] .. '|' .. popped[i], body)
      end
      redis.call('HDEL', KEYS[3], popped[i])
      if popped[i] > highest then highest = popped[i] end
      trimmed = trimmed + 1
    end
    local floor = redis.call('GET', KEYS[4])
    if not floor or highest > floor then redis.call('SET', KEYS[4], highest, 'EX', ARGV[6]) end
  end
  return trimmed
end
"""

#: Append one message to one user's conversation.
#: KEYS: [convs zset, index zset, bodies hash, floor string, spill hash]
#: ARGV: [conversation key, message id, message json, history limit, conversation score,
#:        floor ttl seconds, spill (1: keep trimmed messages for SQL, 0: drop them)]
#: Returns the number of messages trimmed off the window, or -1 if the id was already
#: there. Guarantee: the id is stored at most once (a retried send is a no-op); the
#: index and the bodies never disagree; the window keeps the newest ``limit`` ids; a
#: trimmed message moves to the spill hash in the same step (nothing leaves Redis before
#: it is in SQL), and the floor remembers the highest id trimmed (catch-up from below it
#: is incomplete).
APPEND = _STORE + """
return store()
"""

#: The send path's append: APPEND, and in the same atomic step, record when the message
#: was published in the owner's publish log and PUBLISH it on the owner's channel.
#: KEYS: APPEND's five, then [publish log zset]
#: ARGV: APPEND's seven, then [channel ('' publishes nothing), payload ('' means the
#:        body), log retention seconds, 1 to SPUBLISH (Redis Cluster) else PUBLISH]
#: Returns what APPEND returns; a message already stored is neither stored nor
#: published again (so re-running a send with the same id is harmless).
#: Guarantee: for every owner store, storing a message and publishing it on the channel
#: that store's readers listen to is one step, logged with the Redis server's time
#: (``<ms>.<µs>``, member ``<conversation>|<id>``). So a reader who saw message P saw
#: every message published on its channels before P, and catch-up can find, by that
#: time, every message published after P whatever its id: ids are allocated a round
#: trip earlier, so a slow sender's lower id can be published after a higher one.
#: Log entries outlive trimming on purpose (they expire after the retention): a late
#: message that was trimmed before a client caught up makes that catch-up "not
#: recovered" instead of silently incomplete. Keys of one store only (one hash slot):
#: legal on Redis Cluster, where the channel is a shard channel of the same slot (it
#: carries the owner's hash tag; Redis refuses a script's SPUBLISH to another slot).
DELIVER = _STORE + """
local trimmed = store()
if trimmed < 0 then
  return trimmed
end
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local at = tostring(ms) .. '.' .. string.format('%03d', tonumber(t[2]) % 1000)
redis.call('ZADD', KEYS[6], at, ARGV[1] .. '|' .. ARGV[2])
local keep = tonumber(ARGV[10]) * 1000
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', '(' .. tostring(ms - keep))
redis.call('PEXPIRE', KEYS[6], keep)
if ARGV[8] ~= '' then
  local payload = ARGV[9]
  if payload == '' then payload = ARGV[3] end
  if ARGV[11] == '1' then
    redis.call('SPUBLISH', ARGV[8], payload)
  else
    redis.call('PUBLISH', ARGV[8], payload)
  end
end
return trimmed
"""

#: Persist-then-clear's clear: remove what was persisted from one user's cache, in one
#: step. KEYS: [convs zset, floor string, spill hash, then per conversation: index zset,
#: bodies hash]. ARGV: [floor ttl seconds, number of spill fields, spill field, ...,
#: then per conversation, in KEYS order: conversation key, number of ids, id, ...].
#: Returns {window ids removed, spill fields removed, 1 if the cache is now empty else 0}.
#: Guarantee: only the named ids and fields go, so a message that landed after the
#: caller read the cache (or that could not be persisted) stays; a conversation left
#: empty is dropped; the floor is raised to the highest id removed. Every key is the
#: user's (one slot), so a kill leaves the cache as it was or cleared, never half.
#: Emptiness is measured in the same step; the set of cached users lives in another
#: slot, so the caller drops the user from it only afterwards, and only when this said
#: "empty", behind an intent marker the sweep resolves (ChatCache.remove_listed): a
#: user with a cache is always in the set or named by a marker.
CLEAR = """
local spilled = 0
local nspill = tonumber(ARGV[2])
for i = 3, 2 + nspill do
  spilled = spilled + redis.call('HDEL', KEYS[3], ARGV[i])
end
local a = 3 + nspill
local k = 4
local removed = 0
local highest = ''
while a <= #ARGV do
  local n = tonumber(ARGV[a + 1])
  for i = a + 2, a + 1 + n do
    if redis.call('ZREM', KEYS[k], ARGV[i]) == 1 then
      removed = removed + 1
      if ARGV[i] > highest then highest = ARGV[i] end
    end
    redis.call('HDEL', KEYS[k + 1], ARGV[i])
  end
  if redis.call('ZCARD', KEYS[k]) == 0 then
    redis.call('DEL', KEYS[k], KEYS[k + 1])
    redis.call('ZREM', KEYS[1], ARGV[a])
  end
  a = a + 2 + n
  k = k + 2
end
if removed > 0 then
  local floor = redis.call('GET', KEYS[2])
  if not floor or highest > floor then redis.call('SET', KEYS[2], highest, 'EX', ARGV[1]) end
end
local empty = 0
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[3]) == 0 then empty = 1 end
return {removed, spilled, empty}
"""

#: The write-behind drain takes its next batch. KEYS: [queue list, this drain's
#: processing list, leases zset]; ARGV: [drain token, batch size, lease ms].
#: Returns the batch (the records in the processing list).
#: Guarantee: records move from the queue to the processing list in one step, and stay
#: there until the drain acknowledges them after the SQL commit, so a killed drain loses
#: nothing: its batch waits, with its lease, for the same drain's retry (same token),
#: which resumes it first, or for RECLAIM_BATCH once the lease has run out. The lease is
#: renewed on every call, from the server's clock. The processing lists and the lease
#: set share the queue's slot (their hash tag is the queue's key), so this is legal on
#: a cluster.
CLAIM_BATCH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[1])
if redis.call('LLEN', KEYS[2]) == 0 then
  local batch = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
  if #batch > 0 then
    redis.call('LTRIM', KEYS[1], #batch, -1)
    for i = 1, #batch, 1000 do
      redis.call('RPUSH', KEYS[2], unpack(batch, i, math.min(i + 999, #batch)))
    end
  end
end
local out = redis.call('LRANGE', KEYS[2], 0, -1)
if #out == 0 then redis.call('ZREM', KEYS[3], ARGV[1]) end
return out
"""

#: Give an abandoned drain's batch back to the queue. KEYS: [queue list, its processing
#: list, leases zset]; ARGV: [its token]. Returns how many records went back.
#: Guarantee: only a lease that has run out (on the server's clock, checked in this
#: step) is taken, so a live drain that renewed its lease keeps its batch; the records
#: go back to the head of the queue, in their order. A drain whose lease ran out while
#: it was still writing writes its batch anyway: the records are then written twice,
#: which the idempotent SQL writes make harmless; none is lost.
RECLAIM_BATCH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = redis.call('ZSCORE', KEYS[3], ARGV[1])
if lease and tonumber(lease) > now then return 0 end
local batch = redis.call('LRANGE', KEYS[2], 0, -1)
for i = #batch, 1, -1 do
  redis.call('LPUSH', KEYS[1], batch[i])
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return #batch
"""


# A token bucket on the server's clock: take(key, rate per second, burst) spends a token
# and returns 1 when there is one, else returns 0.
_TOKEN_BUCKET = """
local function take(key, rate, burst)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  rate = tonumber(rate)
  burst = tonumber(burst)
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(state[1]) or burst
  local last = tonumber(state[2]) or now
  tokens = math.min(burst, tokens + (now - last) * rate / 1000)
  local allowed = 0
  if tokens >= 1 then
    tokens = tokens - 1
    allowed = 1
  end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', now)
  redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
  return allowed
end
"""

#: Token-bucket rate limit for one user. KEYS: [rate hash]; ARGV: [rate per second,
#: burst]. Returns 1 when the action may go ahead (and spends a token), else 0.
#: Guarantee: one clock (the server's) and one atomic step, whichever instance asks.
RATE_LIMIT = _TOKEN_BUCKET + """
return take(KEYS[1], ARGV[1], ARGV[2])
"""

#: Claim an idempotency key for a send, with the message it stands for.
#: KEYS: [idempotency key string, rate hash] (one sender's slot)
#: ARGV: [record json, window seconds, rate per second (0: no limit), burst]
#: Returns {1, ''} when claimed (the record is stored for the window), {0, record} when
#: the key was already claimed (nothing changes, no token is spent), {2, ''} when the
#: rate limit refused the send (nothing stored).
#: Guarantee: of any number of concurrent sends with one key, exactly one claims it, and
#: the record names the message (its id included) before any of it is stored, so a
#: retry can always finish or repeat the same message instead of making another.
CLAIM_KEY = _TOKEN_BUCKET + """
local current = redis.call('GET', KEYS[1])
if current then
  return {0, current}
end
if tonumber(ARGV[3]) > 0 and take(KEYS[2], ARGV[3], ARGV[4]) == 0 then
  return {2, ''}
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return {1, ''}
"""


@dataclass(frozen=True)
class Scripts:
    """The scripts, registered on one client."""

    next_id: Script
    append: Script
    deliver: Script
    rate_limit: Script
    claim: Script

    def load(self, client: redis.Redis) -> None:
        """SCRIPT LOAD every script (after a Redis restart or SCRIPT FLUSH). On a cluster
        redis-py sends SCRIPT LOAD to every master (a promoted replica has none: script
        caches are not replicated)."""
        for f in fields(self):
            client.script_load(getattr(self, f.name).script)

    def run(
        self, client: redis.Redis, build: Callable[[Pipeline], None], transaction: bool = False
    ) -> list[Any]:
        """Build and execute a pipeline that queues scripts with :func:`queue`.

        redis-py checks ``SCRIPT EXISTS`` before every pipeline holding a registered
        script: an extra round trip on every send. Queued as plain EVALSHA instead, a
        missing script fails the pipeline with NOSCRIPT, and then the scripts are loaded
        and the pipeline runs again — every write in it is idempotent (appends are keyed
        by message id; a second publish of an event is dropped by clients, which keep
        message ids).
        """
        return run_reloading(client, build, lambda: self.load(client), transaction)

    @classmethod
    def register(cls, client: redis.Redis) -> Scripts:
        return cls(
            next_id=client.register_script(NEXT_ID),
            append=client.register_script(APPEND),
            deliver=client.register_script(DELIVER),
            rate_limit=client.register_script(RATE_LIMIT),
            claim=client.register_script(CLAIM_KEY),
        )


def run_reloading(
    client: Any,
    build: Callable[[Pipeline], None],
    load: Callable[[], object],
    transaction: bool = False,
) -> list[Any]:
    """Build and execute a pipeline of script calls; after NOSCRIPT (a restarted or newly
    promoted Redis) ``load`` the scripts and run it once more. Every call in such a
    pipeline must be safe to run twice."""
    for attempt in (1, 2):
        pipe = client.pipeline(transaction=transaction)
        build(pipe)
        try:
            return list(pipe.execute())
        except NoScriptError:
            if attempt == 2:
                raise
            load()
    raise AssertionError("unreachable")


def queue(pipe: Pipeline, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> None:
    """Queue one script call on a pipeline run by :meth:`Scripts.run`.

    Through ``execute_command``: redis-py's cluster pipeline refuses its ``evalsha``
    method, but routes the command itself by its keys (which are of one slot)."""
    command(pipe, "EVALSHA", script.sha, len(keys), *keys, *args)


def command(pipe: Pipeline, *args: Any) -> None:
    """Queue one command by name (redis-py's cluster pipeline refuses some methods, such
    as ``publish`` and ``evalsha``, but routes the commands themselves)."""
    cast(Any, pipe).execute_command(*args)

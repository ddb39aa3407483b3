"""The Lua scripts behind flask-chat's atomic Redis updates, registered in one place.

Each script touches only keys it declares, all in one hash slot, so it runs unchanged
on Redis Cluster. Scripts are registered per client with ``register_script`` (EVALSHA
with an automatic EVAL fallback after a server restart).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

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
APPEND = """
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
"""

#: Remove the given message ids from one user's conversation; drop the conversation
#: when it is left empty; raise the floor to the highest id removed.
#: KEYS: [convs zset, index zset, bodies hash, floor string, spill hash (unused)]
#: ARGV: [conversation key, floor ttl seconds, id, id, ...]. Returns how many ids were
#: removed.
#: Guarantee: only the named ids go, so a message that arrived after the caller read
#: the cache survives the removal.
REMOVE = """
local removed = 0
local highest = ''
for i = 3, #ARGV do
  if redis.call('ZREM', KEYS[2], ARGV[i]) == 1 then
    removed = removed + 1
    if ARGV[i] > highest then highest = ARGV[i] end
  end
  redis.call('HDEL', KEYS[3], ARGV[i])
end
if removed > 0 then
  local floor = redis.call('GET', KEYS[4])
  if not floor or highest > floor then redis.call('SET', KEYS[4], highest, 'EX', ARGV[2]) end
end
if redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return removed
"""


#: Token-bucket rate limit for one user. KEYS: [rate hash]; ARGV: [rate per second,
#: burst]. Returns 1 when the action may go ahead (and spends a token), else 0.
#: Guarantee: one clock (the server's) and one atomic step, whichever instance asks.
RATE_LIMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local last = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - last) * rate / 1000)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return allowed
"""


@dataclass(frozen=True)
class Scripts:
    """The scripts, registered on one client."""

    next_id: Script
    append: Script
    remove: Script
    rate_limit: Script

    def load(self, client: redis.Redis) -> None:
        """SCRIPT LOAD every script (after a Redis restart or SCRIPT FLUSH)."""
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
        for attempt in (1, 2):
            pipe = client.pipeline(transaction=transaction)
            build(pipe)
            try:
                return list(pipe.execute())
            except NoScriptError:
                if attempt == 2:
                    raise
                self.load(client)
        raise AssertionError("unreachable")

    @classmethod
    def register(cls, client: redis.Redis) -> Scripts:
        return cls(
            next_id=client.register_script(NEXT_ID),
            append=client.register_script(APPEND),
            remove=client.register_script(REMOVE),
            rate_limit=client.register_script(RATE_LIMIT),
        )


def queue(pipe: Pipeline, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> None:
    """Queue one script call on a pipeline run by :meth:`Scripts.run`."""
    pipe.evalsha(script.sha, len(keys), *keys, *args)

"""The Lua scripts behind flask-chat's atomic Redis updates, registered in one place.

Each script touches only keys it declares, all in one hash slot, so it runs unchanged
on Redis Cluster. Scripts are registered per client with ``register_script`` (EVALSHA
with an automatic EVAL fallback after a server restart).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.commands.core import Script

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
#: KEYS: [convs zset, index zset, bodies hash]
#: ARGV: [conversation key, message id, message json, history limit, conversation score]
#: Returns the number of messages trimmed off the window, or -1 if the id was already
#: there. Guarantee: the id is stored at most once (a retried send is a no-op); the
#: index and the bodies never disagree; the window keeps the newest ``limit`` ids.
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
  for i = 1, #popped, 2 do
    redis.call('HDEL', KEYS[3], popped[i])
    trimmed = trimmed + 1
  end
end
return trimmed
"""

#: Remove the given message ids from one user's conversation; drop the conversation
#: when it is left empty. KEYS: [convs zset, index zset, bodies hash]
#: ARGV: [conversation key, id, id, ...]. Returns how many ids were removed.
#: Guarantee: only the named ids go, so a message that arrived after the caller read
#: the cache survives the removal.
REMOVE = """
local removed = 0
for i = 2, #ARGV do
  removed = removed + redis.call('ZREM', KEYS[2], ARGV[i])
  redis.call('HDEL', KEYS[3], ARGV[i])
end
if redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return removed
"""


@dataclass(frozen=True)
class Scripts:
    """The scripts, registered on one client."""

    next_id: Script
    append: Script
    remove: Script

    @classmethod
    def register(cls, client: redis.Redis) -> Scripts:
        return cls(
            next_id=client.register_script(NEXT_ID),
            append=client.register_script(APPEND),
            remove=client.register_script(REMOVE),
        )

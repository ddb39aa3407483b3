"""The Lua scripts behind flask-chat's atomic Redis updates, registered in one place.

Each script touches only keys it declares, all in one hash slot, so it runs unchanged
on Redis Cluster (tests/test_cluster.py checks every call site's keys) — except SEND,
a whole send in one step, which is for a single Redis server only. Scripts are
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

# The body of APPEND, DELIVER and SEND: store one message in one owner's conversation.
# k: {convs zset, index zset, bodies hash, floor string, spill hash}. Returns the number
# of messages trimmed off the window, or -1 if the id was already there.
_STORE = """
local function store_at(k, conv, mid, body, limit, score, ttl, spill)
  if redis.call('HSETNX', k[3], mid, body) == 0 then
    return -1
  end
  redis.call('ZADD', k[2], 0, mid)
  redis.call('ZADD', k[1], 'NX', score, conv)
  local n = redis.call('ZCARD', k[2])
  local trimmed = 0
  if limit > 0 and n > limit then
    local popped = redis.call('ZPOPMIN', k[2], n - limit)
    local highest = ''
    for i = 1, #popped, 2 do
      if spill then
        local old = redis.call('HGET', k[3], popped[i])
        redis.call('HSET', k[5], conv .. '|' .. popped[i], old)
      end
      redis.call('HDEL', k[3], popped[i])
      if popped[i] > highest then highest = popped[i] end
      trimmed = trimmed + 1
    end
    local floor = redis.call('GET', k[4])
    if not floor or highest > floor then redis.call('SET', k[4], highest, 'EX', ttl) end
  end
  return trimmed
end
"""

# Log when a store got a message (server time, "<ms>.<µs>") and publish it on the
# channel its readers listen to ('' publishes nothing).
_PUBLISH = """
local function publish_at(log, conv, mid, keep_s, channel, payload, sharded)
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local at = tostring(ms) .. '.' .. string.format('%03d', tonumber(t[2]) % 1000)
  redis.call('ZADD', log, at, conv .. '|' .. mid)
  local keep = tonumber(keep_s) * 1000
  redis.call('ZREMRANGEBYSCORE', log, '-inf', '(' .. tostring(ms - keep))
  redis.call('PEXPIRE', log, keep)
  if channel ~= '' then
    if sharded then
      redis.call('SPUBLISH', channel, payload)
    else
      redis.call('PUBLISH', channel, payload)
    end
  end
end
"""

# A group message stored once, and each member's conversation a view over the group's
# store (CHAT_GROUP_MEMBER_CACHES = "view"). g: Keys.group_view_keys, {1 convs, 2 index,
# 3 bodies, 4 floor, 5 spill (unused), 6 publish log, 7 aud, 8 refs, 9 kept, 10 kept
# index, 11 snap, 12 let, 13 first}.
#
# A view holds exactly what a copy in the member's own cache would (cache.py shows it
# so): each message remembers its holders (the sender and the members online when it
# was sent: an audience snapshot, shared by the consecutive messages that have the same
# one) and how many of them have not let go of it yet. A member's conversation is every
# message they hold and have not let go of (``let`` "x": cleared, or persisted from the
# spill) or seen spilled (``let`` "s"): the newest ``limit`` of them are the window, the
# rest the spill, which is what trimming a copy at each append leaves. A clear marks
# what it removes as let go and what is then below the window as spilled, so a later
# clear cannot bring a trimmed message back into the window. A message trimmed off the
# group's own window moves to ``kept`` while a holder still needs it; it is dropped
# once every holder let go.
_VIEWS = """
local function hdel_many(key, fields)
  for i = 1, #fields, 4000 do
    redis.call('HDEL', key, unpack(fields, i, math.min(i + 3999, #fields)))
  end
end

local function forget(g, x)
  local n = redis.call('HGET', g[7], x)
  redis.call('HDEL', g[7], x)
  redis.call('HDEL', g[8], x)
  if n then
    local list = redis.call('HGET', g[11], n)
    if list then
      local fields = {}
      for h in string.gmatch(list, '[^,]+') do fields[#fields + 1] = h .. '|' .. x end
      if #fields > 0 then hdel_many(g[12], fields) end
    end
    if redis.call('HINCRBY', g[11], 'c' .. n, -1) <= 0 then
      redis.call('HDEL', g[11], n, 'c' .. n)
      if redis.call('HGET', g[11], 'last') == n then redis.call('HDEL', g[11], 'last') end
    end
  end
  if not redis.call('ZSCORE', g[2], x) then
    redis.call('HDEL', g[9], x)
    redis.call('ZREM', g[10], x)
  end
end

local function view_store(g, conv, mid, body, limit, score, ttl, audience, holders)
  if redis.call('HSETNX', g[3], mid, body) == 0 then
    return -1
  end
  redis.call('ZADD', g[2], 0, mid)
  redis.call('ZADD', g[1], 'NX', score, conv)
  if holders > 0 then
    local n = redis.call('HGET', g[11], 'last')
    if not n or redis.call('HGET', g[11], n) ~= audience then
      n = tostring(redis.call('HINCRBY', g[11], 'seq', 1))
      redis.call('HSET', g[11], n, audience, 'last', n)
    end
    redis.call('HINCRBY', g[11], 'c' .. n, 1)
    redis.call('HSET', g[7], mid, n)
    redis.call('HSET', g[8], mid, holders)
  end
  local count = redis.call('ZCARD', g[2])
  local trimmed = 0
  if limit > 0 and count > limit then
    local popped = redis.call('ZPOPMIN', g[2], count - limit)
    local highest = ''
    for i = 1, #popped, 2 do
      local x = popped[i]
      if tonumber(redis.call('HGET', g[8], x) or '0') > 0 then
        redis.call('HSET', g[9], x, redis.call('HGET', g[3], x))
        redis.call('ZADD', g[10], 0, x)
      elseif redis.call('HEXISTS', g[7], x) == 1 then
        forget(g, x)
      end
      redis.call('HDEL', g[3], x)
      if x > highest then highest = x end
      trimmed = trimmed + 1
    end
    local floor = redis.call('GET', g[4])
    if not floor or highest > floor then redis.call('SET', g[4], highest, 'EX', ttl) end
  end
  return trimmed
end

-- One member's view: window ids (newest first, at most limit), the ids below it not let
-- go of yet (newest first), the ids marked spilled, and the lowest id of the first two.
local function scan_view(g, member, limit)
  local needle = ',' .. member .. ','
  local holds = {}
  local ids = redis.call('ZRANGE', g[2], 0, -1)
  local kept = redis.call('ZRANGE', g[10], 0, -1)
  local i, j = #ids, #kept
  local window, below, spilled = {}, {}, {}
  local lowest = nil
  local previous = nil
  while i > 0 or j > 0 do
    local x
    if j == 0 or (i > 0 and ids[i] > kept[j]) then
      x = ids[i]
      i = i - 1
    else
      x = kept[j]
      j = j - 1
    end
    if x ~= previous then
      previous = x
      local n = redis.call('HGET', g[7], x)
      if n then
        local mine = holds[n]
        if mine == nil then
          local list = redis.call('HGET', g[11], n) or ''
          mine = string.find(list, needle, 1, true) ~= nil
          holds[n] = mine
        end
        if mine then
          local state = redis.call('HGET', g[12], member .. '|' .. x)
          if not state then
            if #window < limit then window[#window + 1] = x else below[#below + 1] = x end
            lowest = x
          elseif state == 's' then
            spilled[#spilled + 1] = x
          end
        end
      end
    end
  end
  return window, below, spilled, lowest
end

local function view_body(g, x)
  return redis.call('HGET', g[3], x) or redis.call('HGET', g[9], x)
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
return store_at({KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]}, ARGV[1], ARGV[2], ARGV[3],
                tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7] == '1')
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
DELIVER = _STORE + _PUBLISH + """
local trimmed = store_at({KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]}, ARGV[1], ARGV[2],
                         ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7] == '1')
if trimmed < 0 then
  return trimmed
end
local payload = ARGV[9]
if payload == '' then payload = ARGV[3] end
publish_at(KEYS[6], ARGV[1], ARGV[2], ARGV[10], ARGV[8], payload, ARGV[11] == '1')
return trimmed
"""

#: DELIVER for a group's store with its members' views (CHAT_GROUP_MEMBER_CACHES
#: "view"). KEYS: Keys.group_view_keys (13, one slot). ARGV: [conversation key, message
#: id, event json, history limit, conversation score, floor ttl seconds, channel, log
#: retention seconds, 1 to SPUBLISH, audience (",<sender>,<member>,...,"), number of
#: holders]. Returns what DELIVER returns. Guarantee: DELIVER's, and the message's
#: holders are recorded in the same step (see _VIEWS).
GROUP_DELIVER = _STORE + _PUBLISH + _VIEWS + """
local g = {}
for i = 1, 13 do g[i] = KEYS[i] end
local trimmed = view_store(g, ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6],
                           ARGV[10], tonumber(ARGV[11]))
if trimmed < 0 then
  return trimmed
end
publish_at(KEYS[6], ARGV[1], ARGV[2], ARGV[8], ARGV[7], ARGV[3], ARGV[9] == '1')
return trimmed
"""

#: Read one member's view of a group. KEYS: Keys.group_view_keys. ARGV: [user id,
#: history limit, 1 to return the spill's bodies too]. Returns {score ('' when the view
#: is empty), window size, window ids (newest first)..., their bodies..., spill size,
#: spill ids..., their bodies (or nothing)...}: exactly what a copy in the user's cache
#: would hold (the event JSON of each; the caller turns it into the user's entry), and
#: the score that conversation would have among theirs (its first message's ms).
VIEW = _VIEWS + """
local g = {}
for i = 1, 13 do g[i] = KEYS[i] end
local window, below, spilled, lowest = scan_view(g, ARGV[1], tonumber(ARGV[2]))
local score = ''
if #window > 0 then
  score = redis.call('HGET', g[13], ARGV[1]) or string.sub(lowest, 1, 13)
end
local out = {score, #window}
for _, x in ipairs(window) do out[#out + 1] = x end
for _, x in ipairs(window) do out[#out + 1] = view_body(g, x) or '' end
local spill = {}
for _, x in ipairs(below) do spill[#spill + 1] = x end
for _, x in ipairs(spilled) do spill[#spill + 1] = x end
out[#out + 1] = #spill
for _, x in ipairs(spill) do out[#out + 1] = x end
if ARGV[3] == '1' then
  for _, x in ipairs(spill) do out[#out + 1] = view_body(g, x) or '' end
end
return out
"""

#: Clear from one member's view what a persist-then-clear read (as CLEAR does for a
#: copy). KEYS: Keys.group_view_keys. ARGV: [user id, history limit, n, window id...,
#: m, spill id...]. Returns {window ids removed, the highest of them ('' for none),
#: spill ids removed, 1 if the view is now empty else 0}.
#: Guarantee: only the named ids go (a message that arrived after the read stays);
#: what is below the window when this runs stays spilled (a copy's trimming would have
#: moved it to the spill); a message every holder let go of is dropped for good. One
#: slot (the group's), so a kill leaves the view as it was or cleared, never half.
VIEW_CLEAR = _VIEWS + """
local g = {}
for i = 1, 13 do g[i] = KEYS[i] end
local member = ARGV[1]
local nl = tonumber(ARGV[3])
local listed = {}
for i = 4, 3 + nl do listed[ARGV[i]] = true end
local base = 4 + nl
local listed_spill = {}
for i = base + 1, base + tonumber(ARGV[base]) do listed_spill[ARGV[i]] = true end
local window, below, spilled, lowest = scan_view(g, member, tonumber(ARGV[2]))
local first = redis.call('HGET', g[13], member)
if not first and lowest then first = string.sub(lowest, 1, 13) end
local function let_go(x)
  redis.call('HSET', g[12], member .. '|' .. x, 'x')
  if redis.call('HINCRBY', g[8], x, -1) <= 0 then forget(g, x) end
end
local removed, highest, spill_removed, spill_left = 0, '', 0, 0
for _, x in ipairs(window) do
  if listed[x] then
    let_go(x)
    removed = removed + 1
    if x > highest then highest = x end
  end
end
for _, x in ipairs(below) do
  if listed_spill[x] then
    let_go(x)
    spill_removed = spill_removed + 1
  else
    redis.call('HSET', g[12], member .. '|' .. x, 's')
    spill_left = spill_left + 1
  end
end
for _, x in ipairs(spilled) do
  if listed_spill[x] then
    let_go(x)
    spill_removed = spill_removed + 1
  else
    spill_left = spill_left + 1
  end
end
local left = #window - removed
if left > 0 then
  redis.call('HSET', g[13], member, first)
else
  redis.call('HDEL', g[13], member)
end
local empty = 0
if left == 0 and spill_left == 0 then empty = 1 end
return {removed, highest, spill_removed, empty}
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

#: Raise a user's floor (see APPEND) to an id, if it is higher. KEYS: [floor string].
#: ARGV: [id, ttl seconds]. A clear of a view raises the floor with it, before it
#: removes anything (a catch-up in between is told "not recovered", never misled).
RAISE_FLOOR = """
local floor = redis.call('GET', KEYS[1])
if not floor or ARGV[1] > floor then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
return 1
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


# The id allocation of NEXT_ID, as a function; and the ISO time of an id's ms, as
# ids.iso_utc writes it (2025-11-28T01:33:54.567Z; days to a civil date: H. Hinnant).
_IDS = """
local function next_id(key)
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local last = redis.call('HMGET', key, 'ms', 'seq')
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
  redis.call('HSET', key, 'ms', ms, 'seq', seq)
  return ms, seq
end

local function iso(ms)
  local s = math.floor(ms / 1000)
  local days = math.floor(s / 86400)
  local rem = s - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
                          - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d, math.floor(rem / 3600),
                       math.floor(rem % 3600 / 60), rem % 60, ms % 1000)
end

-- A body serialised by the caller with placeholders for the id and the time: three
-- pieces around them, and 'it' (id first) or 'ti'.
local function fill(t, mid, ts)
  if t[4] == 'it' then return t[1] .. mid .. t[2] .. ts .. t[3] end
  return t[1] .. ts .. t[2] .. mid .. t[3]
end
"""

#: Allocate the next message id. KEYS: [ids hash]. Returns {ms, seq}.
#: Guarantee: ids come out strictly increasing across every process that shares the
#: Redis server, because the server's clock and the last id are read and written in
#: one atomic step. A clock that steps back keeps the last ms and bumps seq; seq is
#: kept below 10,000 (four digits in the id) by moving on to the next ms.
NEXT_ID = _IDS + """
local ms, seq = next_id(KEYS[1])
return {ms, seq}
"""

#: A whole send on one Redis server (not a cluster: its keys span slots), in one step:
#: the idempotency claim, the rate limit, the id, who of a group is online, every
#: owner's store and publish (DELIVER's, or GROUP_DELIVER's), the set of cached users,
#: the write-behind record. KEYS: [ids, rate, idempotency key, online, cached users,
#: write-behind queue, views, then the stores: kind "u" (1:1): the sender's and the
#: peer's (six each: DELIVER's); "g" (a group, copies or shared store): the sender's and
#: the group's (six each); "v" (a group with views): Keys.group_view_keys (13)]. ARGV:
#: see messaging._send_in_one_step, which builds them. Returns {1, ms, seq, queue length
#: (0 without write-behind), recipient...} when sent, {0, record} when the idempotency
#: key was already claimed (nothing changes), {2} when the rate limit refused the send.
#: Guarantee: everything each of CLAIM_KEY, RATE_LIMIT, NEXT_ID and DELIVER promise,
#: and all of a send happens at once or (refused, replayed) not at all: no reader ever
#: sees an id allocated and not yet stored, so no message is published late.
SEND = _TOKEN_BUCKET + _IDS + _STORE + _PUBLISH + _VIEWS + """
local a = 0
local function nxt()
  a = a + 1
  return ARGV[a]
end
-- One at a time: Lua leaves the order of the expressions of one statement open.
local function template()
  local t = {}
  for i = 1, 4 do t[i] = nxt() end
  return t
end
local kind = nxt()
local rate = tonumber(nxt())
local burst = nxt()
local window = tonumber(nxt())
local claim_t = template()
local now = tonumber(nxt())
local limit = tonumber(nxt())
local retention = nxt()
local sent_t = template()
local received_t = template()
local event_t = template()
local conv = nxt()
local back = nxt()
local channel_a = nxt()
local channel_b = nxt()
local persist_max = tonumber(nxt())
local sender = nxt()
local peer = nxt()
local nmembers = tonumber(nxt())
local members = {}
for i = 1, nmembers do members[i] = ARGV[a + i] end

if window > 0 then
  local current = redis.call('GET', KEYS[3])
  if current then return {0, current} end
end
if rate > 0 and take(KEYS[2], rate, burst) == 0 then return {2} end
local ms, seq = next_id(KEYS[1])
local mid = string.format('%013d-%04d', ms, seq)
local ts = iso(ms)
local score = string.sub(mid, 1, 13)
if window > 0 then redis.call('SET', KEYS[3], fill(claim_t, mid, ts), 'EX', window) end
local event = fill(event_t, mid, ts)

local recipients = {}
if kind == 'u' then
  recipients[1] = peer
else
  for i = 1, nmembers, 4000 do
    local last = math.min(i + 3999, nmembers)
    local scores = redis.call('ZMSCORE', KEYS[4], unpack(members, i, last))
    for j = i, last do
      local at = scores[j - i + 1]
      if at and tonumber(at) > now then recipients[#recipients + 1] = members[j] end
    end
  end
end

local k = 7
local function store_keys(n)
  local t = {}
  for i = 1, n do t[i] = KEYS[k + i] end
  k = k + n
  return t
end
if kind == 'u' then
  local mine = store_keys(6)
  local theirs = store_keys(6)
  if store_at(mine, conv, mid, fill(sent_t, mid, ts), limit, score, retention, true) >= 0 then
    publish_at(mine[6], conv, mid, retention, channel_a, event, false)
  end
  if store_at(theirs, back, mid, fill(received_t, mid, ts), limit, score, retention, true) >= 0 then
    publish_at(theirs[6], back, mid, retention, channel_b, event, false)
  end
  redis.call('SADD', KEYS[5], sender, peer)
elseif kind == 'g' then
  local mine = store_keys(6)
  local group = store_keys(6)
  if store_at(mine, conv, mid, fill(sent_t, mid, ts), limit, score, retention, true) >= 0 then
    publish_at(mine[6], conv, mid, retention, '', '', false)
  end
  if store_at(group, conv, mid, event, limit, score, retention, false) >= 0 then
    publish_at(group[6], conv, mid, retention, channel_b, event, false)
  end
  redis.call('SADD', KEYS[5], sender)
else
  local group = store_keys(13)
  local audience = ',' .. sender .. ','
  if #recipients > 0 then audience = audience .. table.concat(recipients, ',') .. ',' end
  if view_store(group, conv, mid, event, limit, score, retention, audience,
                1 + #recipients) >= 0 then
    publish_at(group[6], conv, mid, retention, channel_b, event, false)
  end
  local gid = string.match(conv, '^(%d+)_')
  local names = {0, sender .. ':' .. gid}
  for _, r in ipairs(recipients) do
    names[#names + 1] = 0
    names[#names + 1] = r .. ':' .. gid
  end
  for i = 1, #names, 4000 do
    redis.call('ZADD', KEYS[7], unpack(names, i, math.min(i + 3999, #names)))
  end
end

local queued = 0
if persist_max > 0 then
  local owners = {'[' .. sender .. ',"' .. conv .. '","sent"]'}
  if kind == 'u' then
    owners[2] = '[' .. peer .. ',"' .. back .. '","received"]'
  else
    for _, r in ipairs(recipients) do
      owners[#owners + 1] = '[' .. r .. ',"' .. conv .. '","received"]'
    end
  end
  local record = '{"m":' .. event .. ',"v":[' .. table.concat(owners, ',') .. ']}'
  queued = redis.call('RPUSH', KEYS[6], record)
  redis.call('LTRIM', KEYS[6], -persist_max, -1)
end
local out = {1, ms, seq, queued}
for _, r in ipairs(recipients) do out[#out + 1] = r end
return out
"""


@dataclass(frozen=True)
class Scripts:
    """The scripts, registered on one client."""

    next_id: Script
    append: Script
    deliver: Script
    rate_limit: Script
    claim: Script
    send: Script
    group_deliver: Script
    view: Script
    view_clear: Script
    raise_floor: Script

    def load(self, client: redis.Redis) -> None:
        """SCRIPT LOAD every script (after a Redis restart or SCRIPT FLUSH). On a cluster
        redis-py sends SCRIPT LOAD to every master (a promoted replica has none: script
        caches are not replicated)."""
        bodies = [getattr(self, f.name).script for f in fields(self)]
        if isinstance(client, redis.Redis):
            # One round trip for all of them (a slow link makes each one count).
            pipe = client.pipeline(transaction=False)
            for body in bodies:
                pipe.script_load(body)
            pipe.execute()
            return
        for body in bodies:
            client.script_load(body)

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
            send=client.register_script(SEND),
            group_deliver=client.register_script(GROUP_DELIVER),
            view=client.register_script(VIEW),
            view_clear=client.register_script(VIEW_CLEAR),
            raise_floor=client.register_script(RAISE_FLOOR),
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

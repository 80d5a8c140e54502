"""Lua run inside Redis. An event is applied by two scripts, each atomic and idempotent on its
own and each confined to one hash slot (so the same code runs on Redis Cluster):

1. LOG_EVENT, in the slot of the user's log partition (app.store.keys): remember the event,
   append to the partition's stream, count popularity — all or nothing.
2. APPLY_EVENT, in the user's `{u:ID}` slot: remember the event, update history or friends,
   add the item to the seen set, drop the cached vector and the cached ranked list — all or
   nothing, so the user's next request reflects the event.

A follow has a third step, FOLLOWER_INDEX in the followed user's slot, that adds the follower
to the reverse index an erasure reads (app.store.keys `followers`).

Both remember an event by the same pair, (user id, event id) (app.store.keys `logged` and
`applied`, per-user ZSETs of event id → expiry): an event id is unique per user, so the two
steps always agree on which events are new without talking to each other across slots. A
failure between or during the steps leaves each either done or not done; the client's retry of
the same batch completes the missing step and skips the done one, so every event ends up logged
once and applied once.
"""

_FIRST_TIME = """
-- True the first time this event id is seen within the TTL: remembered in a per-user ZSET
-- (event id -> expiry), whose expired ids are dropped on the way.
local function first_time(key, event_id, ttl)
  local now = tonumber(redis.call('TIME')[1])
  local expiry = redis.call('ZSCORE', key, event_id)
  if expiry and tonumber(expiry) > now then
    return false
  end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  redis.call('ZADD', key, now + ttl, event_id)
  redis.call('EXPIRE', key, ttl)
  return true
end
"""

LOG_EVENT = _FIRST_TIME + """
-- KEYS: the user's logged markers, events stream, popularity
-- ARGV: dedup_ttl, stream_maxlen, event_id, user_id, type, item_id, friend_id, value, timestamp
if not first_time(KEYS[1], ARGV[3], tonumber(ARGV[1])) then
  return 0
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
  'event_id', ARGV[3], 'user_id', ARGV[4], 'type', ARGV[5], 'item_id', ARGV[6],
  'friend_id', ARGV[7], 'value', ARGV[8], 'timestamp', ARGV[9])
if ARGV[6] ~= '' then
  redis.call('ZINCRBY', KEYS[3], 1, ARGV[6])
end
return 1
"""

APPLY_EVENT = _FIRST_TIME + """
-- KEYS: applied markers, history, friends, vector, seen set, followed, ranked list
-- ARGV: dedup_ttl, type, item_id, friend_id, value, weight, recency, history_cap, item tag
--       (8 bytes), seen_cap, event_id
if not first_time(KEYS[1], ARGV[11], tonumber(ARGV[1])) then
  return 0
end
-- the list, or the lease of a request computing one (whose write then finds it gone)
redis.call('DEL', KEYS[7])
local kind = ARGV[2]
if kind == 'follow' then
  local tie = tonumber(ARGV[5]) or 1
  if tie <= 0 then tie = 1 end
  redis.call('HSET', KEYS[3], ARGV[4], tie)
  redis.call('SADD', KEYS[6], ARGV[4])
  return 1
elseif kind == 'unfollow' then
  redis.call('HDEL', KEYS[3], ARGV[4])
  return 1
end
local weight, recency = tonumber(ARGV[6]), tonumber(ARGV[7])
local current = redis.call('HGET', KEYS[2], ARGV[3])
if current then
  local sep = string.find(current, ':', 1, true)
  weight = weight + tonumber(string.sub(current, 1, sep - 1))
  recency = math.max(recency, tonumber(string.sub(current, sep + 1)))
end
redis.call('HSET', KEYS[2], ARGV[3], string.format('%.6g:%.17g', weight, recency))
if redis.call('HLEN', KEYS[2]) > tonumber(ARGV[8]) then
  local entries = redis.call('HGETALL', KEYS[2])
  local oldest, oldest_at = nil, math.huge
  for i = 1, #entries, 2 do
    local v = entries[i + 1]
    local at = tonumber(string.sub(v, string.find(v, ':', 1, true) + 1))
    if at < oldest_at then oldest, oldest_at = entries[i], at end
  end
  redis.call('HDEL', KEYS[2], oldest)
end
-- The seen set: tags in first-seen order, each once (a match must start on a tag boundary).
local seen, tag = redis.call('GET', KEYS[5]), ARGV[9]
local known = false
if seen then
  local at = 1
  while not known do
    local pos = string.find(seen, tag, at, true)
    if not pos then break end
    known = pos % 8 == 1
    at = pos + 1
  end
end
if not known then
  local cap = tonumber(ARGV[10])
  if seen and #seen >= cap * 8 then
    -- full: drop the oldest eighth at once, so the set is rewritten once per cap/8 new items
    local drop = math.max(1, math.floor(cap / 8))
    redis.call('SET', KEYS[5], string.sub(seen, drop * 8 + 1) .. tag)
  else
    redis.call('APPEND', KEYS[5], tag)
  end
end
redis.call('DEL', KEYS[4])
return 1
"""

FOLLOWER_INDEX = """
-- KEYS: the followed user's followers
-- ARGV: follower
return redis.call('SADD', KEYS[1], ARGV[1])
"""

# Erasure (app.store.erase): each script in one slot; the caller runs them in an order that a
# retry can finish (the reverse index is deleted last).
UNLINK_FROM_FOLLOWER = """
-- KEYS: the follower's friends, followed, ranked list; ARGV: the erased user
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[1])
-- the follower's cached list may name the user among the friends who engaged
redis.call('DEL', KEYS[3])
return removed
"""

UNLINK_FROM_FOLLOWED = """
-- KEYS: a followed user's followers; ARGV: the erased user
return redis.call('SREM', KEYS[1], ARGV[1])
"""

ERASE_USER = """
-- KEYS: history, friends, vector, seen, applied, followers, followed, ranked list
--       (app.store.keys user_keys)
-- ARGV: n, then the n followers and then the followed users the erasure has unlinked
-- returns: history items, friends, seen items, cached vectors, event markers, and the reverse
-- index entries left (follows that landed since the index was read: another pass unlinks them)
local n = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('SREM', i <= n + 1 and KEYS[6] or KEYS[7], ARGV[i])
end
local counts = {redis.call('HLEN', KEYS[1]), redis.call('HLEN', KEYS[2]),
                math.floor(redis.call('STRLEN', KEYS[4]) / 8), redis.call('EXISTS', KEYS[3]),
                redis.call('ZCARD', KEYS[5]),
                redis.call('SCARD', KEYS[6]) + redis.call('SCARD', KEYS[7])}
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[8])
return counts
"""

ERASE_LOG_PAGE = """
-- KEYS: a log partition's stream, the user's logged markers in that partition
-- ARGV: first id (exclusive after the first page: '(' prefix), page size, user
-- Deletes one page's entries by the user or naming the user as friend; returns
-- {deleted, last id read or '', markers deleted}; the last page also deletes the markers.
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
local deleted = 0
for _, entry in ipairs(entries) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if (fields[i] == 'user_id' or fields[i] == 'friend_id') and fields[i + 1] == ARGV[3] then
      deleted = deleted + redis.call('XDEL', KEYS[1], entry[1])
      break
    end
  end
end
if #entries < tonumber(ARGV[2]) then
  local markers = redis.call('ZCARD', KEYS[2])
  redis.call('DEL', KEYS[2])
  return {deleted, '', markers}
end
return {deleted, entries[#entries][1], 0}
"""

PUBLISH_RELOAD = """
-- KEYS: reload notice
-- ARGV: model version, origin
local generation = redis.call('HINCRBY', KEYS[1], 'generation', 1)
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'origin', ARGV[2])
return generation
"""

# The read of /recommend and the other per-user routes: one round trip on a single Redis.
READ_USER = """
-- KEYS: ranked list, history, friends, vector, seen (the user's slot)
-- ARGV: list tag (model version + the format byte; '' = no list cache), lease token, lease ms,
--       max friends, vector key head and tail ('' = friends' vectors not read: on a cluster
--       they live in other slots)
-- returns {1, list} on a hit; else {0, lease taken (0/1), history (flat), the strongest friends
-- (flat id, tie), vector, seen, the friends' vectors in the same order}
local tag = ARGV[1]
local cached = nil
if tag ~= '' then
  cached = redis.call('GET', KEYS[1])
  if cached and string.sub(cached, 1, #tag) == tag then
    return {1, cached}
  end
end
local hist = redis.call('HGETALL', KEYS[2])
local raw = redis.call('HGETALL', KEYS[3])
-- strongest first, equal ties by id in byte order (redis_store.tie_rank, the evaluator's
-- order); compared byte by byte, as Lua's < on strings follows the server's locale
local function id_before(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local ties = {}
for i = 1, #raw, 2 do
  ties[#ties + 1] = {raw[i], raw[i + 1], tonumber(raw[i + 1])}
end
table.sort(ties, function(a, b)
  if a[3] ~= b[3] then return a[3] > b[3] end
  return id_before(a[1], b[1])
end)
local friends, vectors = {}, {}
local head, tail = ARGV[5], ARGV[6]
for n = 1, math.min(#ties, tonumber(ARGV[4])) do
  friends[#friends + 1] = ties[n][1]
  friends[#friends + 1] = ties[n][2]
  if head ~= '' then
    vectors[n] = redis.call('GET', head .. ties[n][1] .. tail)
  end
end
-- a lease only for a user with state (a cold user's list is never cached: no key is left
-- behind for ids nobody stored), and not while another request holds one
local leased = 0
if tag ~= '' and (#hist > 0 or #raw > 0)
    and not (cached and string.byte(cached, 1) == 0) then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', tonumber(ARGV[3]))
  leased = 1
end
local out = {0, leased, hist, friends, redis.call('GET', KEYS[4]), redis.call('GET', KEYS[5])}
for n = 1, #friends / 2 do
  out[#out + 1] = vectors[n]
end
return out
"""

SAVE_RANKED = """
-- KEYS: ranked list, vector (the user's slot)
-- ARGV: lease token, list, ttl milliseconds, vector entry ('' = none), its ttl seconds
-- Stored only while the lease is still there: an event of the user (or an erasure) since the
-- read deleted it, and the list computed from the older state must not be served. The user's
-- vector, encoded from the history read with the lease, is exactly as fresh: it is cached in
-- the same call, with no need to read the history again to check it.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', tonumber(ARGV[3]))
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[2], ARGV[4], 'EX', tonumber(ARGV[5]))
end
return 1
"""

"""Lua run inside Redis. Applying one event is one script: the de-duplication check, the log
append and the state updates happen together or not at all, so a retried batch after a failure
applies each event exactly once."""

APPLY_EVENT = """
-- KEYS: seen_event, history, friends, vector, events stream, popularity
-- ARGV: event_id, dedup_ttl, user_id, type, item_id, friend_id, value, timestamp,
--       weight, recency, history_cap, stream_maxlen
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  return 0
end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[12], '*',
  'event_id', ARGV[1], 'user_id', ARGV[3], 'type', ARGV[4], 'item_id', ARGV[5],
  'friend_id', ARGV[6], 'value', ARGV[7], 'timestamp', ARGV[8])
local kind = ARGV[4]
if kind == 'follow' then
  local tie = tonumber(ARGV[7]) or 1
  if tie <= 0 then tie = 1 end
  redis.call('HSET', KEYS[3], ARGV[6], tie)
  return 1
elseif kind == 'unfollow' then
  redis.call('HDEL', KEYS[3], ARGV[6])
  return 1
end
local weight, recency = tonumber(ARGV[9]), tonumber(ARGV[10])
local current = redis.call('HGET', KEYS[2], ARGV[5])
if current then
  local sep = string.find(current, ':', 1, true)
  weight = weight + tonumber(string.sub(current, 1, sep - 1))
  recency = math.max(recency, tonumber(string.sub(current, sep + 1)))
end
redis.call('HSET', KEYS[2], ARGV[5], string.format('%.6g:%.17g', weight, recency))
if redis.call('HLEN', KEYS[2]) > tonumber(ARGV[11]) then
  local entries = redis.call('HGETALL', KEYS[2])
  local oldest, oldest_at = nil, math.huge
  for i = 1, #entries, 2 do
    local v = entries[i + 1]
    local at = tonumber(string.sub(v, string.find(v, ':', 1, true) + 1))
    if at < oldest_at then oldest, oldest_at = entries[i], at end
  end
  redis.call('HDEL', KEYS[2], oldest)
end
redis.call('ZINCRBY', KEYS[6], 1, ARGV[5])
redis.call('DEL', KEYS[4])
return 1
"""

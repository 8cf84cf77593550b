-- Counts one transaction in a user's history (see fraud/engine/history.py).
--
-- KEYS     window (zset), stats (hash), countries (set), merchants (set), ids (zset)
-- ARGV     at_ms, window member, ln amount, (ln amount)^2, country, merchant, 24h_ms,
--          window TTL ms, long TTL ms, cap of the seen sets, transaction_id

local at = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', at - tonumber(ARGV[7])))
redis.call('PEXPIRE', KEYS[1], ARGV[8])
-- The transaction ids of the same 24 h: a replay's cheap first check (fraud.engine.endpoint).
redis.call('ZADD', KEYS[5], ARGV[1], ARGV[11])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', string.format('%.0f', at - tonumber(ARGV[7])))
redis.call('PEXPIRE', KEYS[5], ARGV[8])

redis.call('HINCRBY', KEYS[2], 'n', 1)
redis.call('HINCRBYFLOAT', KEYS[2], 's1', ARGV[3])
redis.call('HINCRBYFLOAT', KEYS[2], 's2', ARGV[4])
local last = tonumber(redis.call('HGET', KEYS[2], 'last'))
if not last or last < at then
  redis.call('HSET', KEYS[2], 'last', ARGV[1])
end
redis.call('PEXPIRE', KEYS[2], ARGV[9])

local cap = tonumber(ARGV[10])
local seen = {{KEYS[3], ARGV[5]}, {KEYS[4], ARGV[6]}}
for _, pair in ipairs(seen) do
  local key, value = pair[1], pair[2]
  if value ~= '' and redis.call('SCARD', key) < cap then
    redis.call('SADD', key, value)
  end
  redis.call('PEXPIRE', key, ARGV[9])
end
return {}

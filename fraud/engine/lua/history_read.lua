-- A user's history as of ARGV[1] (see fraud/engine/history.py for the definitions).
--
-- KEYS     window (zset), stats (hash), countries (set), merchants (set), ids (zset)
-- ARGV     now_ms, country, merchant, small_amount, 10m_ms, 1h_ms, 24h_ms, transaction_id
-- Reply    {count_10m, count_1h, count_24h, small_count_1h, amount_1h (text), countries_24h,
--           n, s1 (text), s2 (text), last_ms, country_seen (0|1), merchant_seen (0|1),
--           recorded (0|1: this transaction_id was counted in the last 24 h)}

local now = tonumber(ARGV[1])
local country, merchant = ARGV[2], ARGV[3]
local small = tonumber(ARGV[4])
local w10m, w1h, w24h = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])

-- (now - 24h, now]: a window's lower end is open, as in fraud.brain.synthetic.history_of.
local events = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%.0f', now - w24h),
  string.format('%.0f', now), 'WITHSCORES')
local c10m, c1h, c24h, small_1h, amount_1h = 0, 0, 0, 0, 0
local countries, distinct = {}, 0
for i = 1, #events, 2 do
  local at = tonumber(events[i + 1])
  local amount, c = string.match(events[i], '^([^|]*)|([^|]*)|')
  amount = tonumber(amount)
  c24h = c24h + 1
  if at > now - w1h then
    c1h = c1h + 1
    amount_1h = amount_1h + amount
    if amount <= small then
      small_1h = small_1h + 1
    end
    if at > now - w10m then
      c10m = c10m + 1
    end
  end
  if c ~= '' and not countries[c] then
    countries[c] = true
    distinct = distinct + 1
  end
end

local s = redis.call('HMGET', KEYS[2], 'n', 's1', 's2', 'last')
-- The latest transaction at or before now: one of the user's added after this read's time (two
-- at once, the later answered first) is not "the previous one" (the brain refuses a last_ms
-- after the transaction's own time). The window holds it when it is in the last 24 h; else now.
local last = tonumber(s[4]) or 0
if last > now then
  last = now
  if #events > 0 then
    last = tonumber(events[#events])
  end
end
local country_seen, merchant_seen = 0, 0
if country ~= '' then
  country_seen = redis.call('SISMEMBER', KEYS[3], country)
end
if merchant ~= '' then
  merchant_seen = redis.call('SISMEMBER', KEYS[4], merchant)
end
local recorded = 0
if redis.call('ZSCORE', KEYS[5], ARGV[8]) then
  recorded = 1
end
-- Fractions as text: Redis turns a Lua number into an integer reply.
return {c10m, c1h, c24h, small_1h, string.format('%.17g', amount_1h), distinct,
  tonumber(s[1]) or 0, s[2] or '0', s[3] or '0', last, country_seen, merchant_seen, recorded}

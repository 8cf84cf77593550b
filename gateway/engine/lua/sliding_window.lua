-- Sliding-log rate limit, one atomic step (see gateway/engine/ratelimit.py for the why).
--
-- KEYS[1]  a ZSET holding one member per ADMITTED request; score = member = admission time in µs.
-- ARGV[1]  limit: at most this many admissions in any window
-- ARGV[2]  window_ms
-- ARGV[3]  cost: how many slots this request takes (>= 1)
-- Reply    {allowed (0|1), remaining, reset_ms, retry_after_ms}
--          reset_ms: until the oldest admitted entry leaves the window (one slot frees);
--          retry_after_ms: 0 when allowed, else until enough entries leave for `cost` to fit.

local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window_ms = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local window_us = window_ms * 1000

-- Redis' clock, not the callers': gateway processes on different machines may disagree by
-- seconds, and the window must mean the same thing for all of them. (Redis >= 5 replicates
-- script effects, so a script may read TIME and then write.)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

-- An entry admitted at s counts during [s, s + window): drop everything at or before now - window.
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window_us)
local used = redis.call('ZCARD', key)

-- Milliseconds (rounded up, so never early) until the entry of this rank (0 = oldest) leaves
-- the window; a whole window when there is no such entry.
local function ms_until_leaves(rank)
  local entry = redis.call('ZRANGE', key, rank, rank, 'WITHSCORES')
  if entry[2] == nil then
    return window_ms
  end
  return math.ceil((tonumber(entry[2]) + window_us - now) / 1000)
end

if used + cost > limit then
  -- Rejected requests are NOT stored: a client hammering a full key cannot keep itself locked
  -- out, and the key never holds more than `limit` members (a peer that logged rejections too
  -- grew one tenant's ZSET to 303,813 members in a 60 s window).
  local retry = ms_until_leaves(used + cost - limit - 1)
  return {0, math.max(limit - used, 0), ms_until_leaves(0), retry}
end

-- Members must be unique or ZADD would overwrite one and undercount. Two scripts can run in the
-- same microsecond, so a new score is bumped past the newest one: scores stay unique and
-- increasing with no second key (no INCR'd sequence to store and expire).
local score = now
local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
if newest[2] ~= nil and tonumber(newest[2]) >= score then
  score = tonumber(newest[2]) + 1
end
for i = 0, cost - 1 do
  -- %.0f: tostring() would print a 16-digit number in exponent form and lose the last digits.
  redis.call('ZADD', key, score + i, string.format('%.0f', score + i))
end

-- The key lives exactly as long as its newest entry counts, so idle keys vanish by themselves.
redis.call('PEXPIRE', key, math.ceil((score + cost - 1 + window_us - now) / 1000))
return {1, limit - used - cost, ms_until_leaves(0), 0}

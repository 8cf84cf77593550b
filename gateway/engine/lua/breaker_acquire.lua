-- Circuit breaker, acquire: may this request go to the upstream? (after breaker_common.lua)
--
-- ARGV[6]  cooldown_ms
-- ARGV[7]  probe_ttl_ms: a probe token frees itself after this long if nobody records it
-- Reply    {allowed (0|1), state, probe (0|1), generation, retry_after_ms}

local cooldown_ms = tonumber(ARGV[6])
local probe_ttl_ms = tonumber(ARGV[7])

local h = redis.call('HMGET', key, 'st', 'gen', 'opened')
local st, gen = h[1], tonumber(h[2])

if not st then
  -- First sight of this upstream (or its hash expired while idle): store the generation now, so
  -- the permit's generation is the one record() will compare against.
  redis.call('HSET', key, 'st', 'closed', 'gen', int(now))
  redis.call('PEXPIRE', key, key_ttl_ms)
  return {1, 'closed', 0, now, 0}
end

if st == 'closed' then
  return {1, 'closed', 0, gen, 0}
end

if st == 'open' then
  local left = tonumber(h[3]) + cooldown_ms - now
  if left > 0 then
    return {0, 'open', 0, gen, left}
  end
  -- Cooldown over: the first caller moves the breaker to half-open and competes for a probe slot
  -- like everybody else (slots were emptied when the breaker opened).
  gen = transition('open', gen, 'half_open')
end

-- Half-open: a free or expired slot is a probe token. The HMGET and HSET happen in one script,
-- so N processes racing here get at most probe_slots tokens between them, fleet-wide.
local fields = {}
for j = 1, probe_slots do
  fields[j] = 'p' .. j
end
local expiries = redis.call('HMGET', key, unpack(fields))
local soonest = nil
for j = 1, probe_slots do
  local expires = tonumber(expiries[j])
  if not expires or expires <= now then
    redis.call('HSET', key, 'p' .. j, int(now + probe_ttl_ms))
    redis.call('PEXPIRE', key, key_ttl_ms)
    return {1, 'half_open', 1, gen, 0}
  end
  if not soonest or expires < soonest then
    soonest = expires
  end
end
-- Refused like open; a slot frees when a probe reports (which ends half-open) or expires.
return {0, 'half_open', 0, gen, math.max(soonest - now, 1)}

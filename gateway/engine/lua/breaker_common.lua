-- Circuit breaker, shared prelude (see gateway/engine/breaker.py for the why). breaker.py puts
-- this file in front of breaker_acquire.lua, breaker_record.lua and breaker_reset.lua, so each
-- step is one script, one EVALSHA, atomic inside Redis.
--
-- KEYS[1]  the upstream's hash (one key per upstream, so a script never spans keys):
--            st      closed | open | half_open
--            gen     generation: grows on every transition; permits carry it (stale-permit rule)
--            opened  when the breaker last opened (ms, Redis clock)
--            s       consecutive failures in closed state (consecutive mode only)
--            e<i> f<i> t<i>   window bucket i (0 .. buckets-1): its epoch, failures, total
--            p<j>    probe slot j (1 .. half_open_max): when that probe token expires (ms)
-- ARGV[1]  channel that transitions are published on
-- ARGV[2]  the upstream (only for the published event)
-- ARGV[3]  key TTL in ms, refreshed on every write
-- ARGV[4]  half_open_max: number of probe slots
-- ARGV[5]  number of window buckets
-- ARGV[6..] the step's own arguments

local key = KEYS[1]
local channel = ARGV[1]
local upstream = ARGV[2]
local key_ttl_ms = tonumber(ARGV[3])
local probe_slots = tonumber(ARGV[4])
local buckets = tonumber(ARGV[5])

-- Redis' clock, not the callers': gateway processes on different machines may disagree by
-- seconds, and a cooldown must end at the same moment for all of them. (Redis >= 5 replicates
-- script effects, so a script may read TIME and then write.)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- %.0f: tostring() would print a 13-digit millisecond time in exponent form and lose digits.
local function int(n)
  return string.format('%.0f', n)
end

-- The window's hash fields, bucket by bucket: e<i> its epoch, f<i> failures, t<i> total.
local function window_fields()
  local fields = {}
  for i = 0, buckets - 1 do
    fields[#fields + 1] = 'e' .. i
    fields[#fields + 1] = 'f' .. i
    fields[#fields + 1] = 't' .. i
  end
  return fields
end

local function clear_window()
  redis.call('HDEL', key, unpack(window_fields()))
end

local function clear_probes()
  local fields = {}
  for j = 1, probe_slots do
    fields[#fields + 1] = 'p' .. j
  end
  redis.call('HDEL', key, unpack(fields))
end

-- Moves to `to`, bumps the generation and tells every process. The new generation is at least
-- `now`, so a hash that expired and was created again never reuses a generation an old permit
-- may still carry. Pub/sub is only a notification: the state itself is this hash. Every
-- transition ends a consecutive-failure streak.
local function transition(from, gen, to)
  local new_gen = math.max(gen + 1, now)
  redis.call('HDEL', key, 's')
  redis.call('HSET', key, 'st', to, 'gen', int(new_gen))
  redis.call('PEXPIRE', key, key_ttl_ms)
  redis.call('PUBLISH', channel,
    cjson.encode({upstream = upstream, from_state = from, to_state = to, at_ms = now}))
  return new_gen
end

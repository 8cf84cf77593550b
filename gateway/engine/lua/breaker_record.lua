-- Circuit breaker, record: the outcome of a request that acquire() let through (after
-- breaker_common.lua).
--
-- ARGV[6]  the permit's generation
-- ARGV[7]  success (1) or failure (0)
-- ARGV[8]  bucket_ms: width of one window bucket
-- ARGV[9]  min_volume: requests in the window before the ratio counts
-- ARGV[10] failure_threshold: ratio 0..1 (as Python's repr of the float, so no digits are lost)
-- ARGV[11] consecutive_failures: > 0 selects the consecutive mode (the window is not kept)
-- Reply    {from_state, to_state, at_ms}; from_state '' when nothing changed

local permit_gen = tonumber(ARGV[6])
local success = ARGV[7] == '1'
local bucket_ms = tonumber(ARGV[8])
local min_volume = tonumber(ARGV[9])
local threshold = tonumber(ARGV[10])
local consecutive = tonumber(ARGV[11]) or 0

local h = redis.call('HMGET', key, 'st', 'gen')
local st, gen = h[1], tonumber(h[2])

-- The late-outcome race: a request admitted in one generation may report after the breaker has
-- moved on (closed g -> open -> half-open -> closed g+3 while a slow call timed out). Counting
-- that failure would charge the fresh window with the old upstream's sins, and a late probe
-- outcome would decide a half-open period it did not belong to. Only the generation that issued
-- the permit may be changed by it; anything else is ignored.
if not st or gen ~= permit_gen then
  return {'', '', 0}
end

if st == 'half_open' then
  -- The first probe to report decides; the other probe tokens go with the half-open period.
  clear_probes()
  if success then
    clear_window()
    redis.call('HDEL', key, 'opened')
    transition('half_open', gen, 'closed')
    return {'half_open', 'closed', now}
  end
  redis.call('HSET', key, 'opened', int(now))
  transition('half_open', gen, 'open')
  return {'half_open', 'open', now}
end

if st ~= 'closed' then
  -- An open-state permit is a refusal: there is no outcome to count.
  return {'', '', 0}
end

if consecutive > 0 then
  -- Consecutive mode: a success ends the streak, the Nth failure in a row opens.
  if success then
    redis.call('HDEL', key, 's')
  elseif redis.call('HINCRBY', key, 's', 1) >= consecutive then
    redis.call('HSET', key, 'opened', int(now))
    transition('closed', gen, 'open')
    return {'closed', 'open', now}
  end
  redis.call('PEXPIRE', key, key_ttl_ms)
  return {'', '', 0}
end

-- Closed: count the outcome in this bucket. A bucket's epoch says which bucket_ms slice of time
-- it holds; a slot still holding an older slice is recycled, so the hash keeps `buckets` slots.
local epoch = math.floor(now / bucket_ms)
local slot = epoch % buckets
if tonumber(redis.call('HGET', key, 'e' .. slot)) ~= epoch then
  redis.call('HSET', key, 'e' .. slot, int(epoch), 'f' .. slot, 0, 't' .. slot, 0)
end
redis.call('HINCRBY', key, 't' .. slot, 1)
if not success then
  redis.call('HINCRBY', key, 'f' .. slot, 1)
end

-- The window: the current bucket and the buckets-1 before it (a fixed number of fields, O(1)).
local v = redis.call('HMGET', key, unpack(window_fields()))
local failures, total = 0, 0
for i = 0, buckets - 1 do
  local e = tonumber(v[3 * i + 1])
  if e and e > epoch - buckets then
    failures = failures + tonumber(v[3 * i + 2])
    total = total + tonumber(v[3 * i + 3])
  end
end

-- Checked after every outcome, successes included: 5 failures then 5 successes is a ratio of
-- 0.5 over 10 requests as much as the other order is.
if total >= min_volume and failures / total >= threshold then
  clear_window()
  redis.call('HSET', key, 'opened', int(now))
  transition('closed', gen, 'open')
  return {'closed', 'open', now}
end
redis.call('PEXPIRE', key, key_ttl_ms)
return {'', '', 0}

-- Circuit breaker, reset: an admin forces the breaker closed (after breaker_common.lua).
--
-- Reply    {from_state, to_state, at_ms}; from_state '' when it was already closed (its window
--          is still emptied) or unknown (nothing is created).

local h = redis.call('HMGET', key, 'st', 'gen')
local st, gen = h[1], tonumber(h[2])
if not st then
  return {'', '', 0}
end

clear_window()
clear_probes()
redis.call('HDEL', key, 'opened', 's')
if st == 'closed' then
  redis.call('PEXPIRE', key, key_ttl_ms)
  return {'', '', 0}
end
-- The new generation voids every permit still out, probes included.
transition(st, gen, 'closed')
return {st, 'closed', now}

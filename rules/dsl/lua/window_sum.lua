-- Records one event's value in a sliding sum window and returns the window's total, atomically.
-- KEYS[1]  sorted set: member = event id, score = the event's time (seconds)
-- KEYS[2]  hash: member = event id, value = the event's amount (pruned with the sorted set)
-- ARGV[1]  cutoff: entries scored at or below it have left the window
-- ARGV[2]  now: the score of the new entry
-- ARGV[3]  member (event id): NX keeps the first record, so a retried event is summed once
-- ARGV[4]  the amount, as a decimal string
-- ARGV[5]  TTL in milliseconds (the window's length)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
  -- HDEL in slices: unpack() of thousands of arguments would overflow Lua's C stack.
  for first = 1, #expired, 1000 do
    redis.call('HDEL', KEYS[2], unpack(expired, first, math.min(first + 999, #expired)))
  end
end
if redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[3]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
end
-- Summing the live values (rather than keeping a running total) keeps the result exact: no
-- drift from adding and later subtracting floats.
local total = 0
local amounts = redis.call('HVALS', KEYS[2])
for i = 1, #amounts do
  total = total + tonumber(amounts[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
-- A string, not a number: Redis would truncate a Lua number reply to an integer.
return string.format('%.17g', total)

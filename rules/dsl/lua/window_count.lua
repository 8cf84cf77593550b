-- Records one event in a sliding count window and returns the window's size, atomically.
-- KEYS[1]  sorted set: member = event id, score = the event's time (seconds)
-- ARGV[1]  cutoff: entries scored at or below it have left the window
-- ARGV[2]  now: the score of the new entry
-- ARGV[3]  member (event id): NX keeps the first time, so a retried event is counted once
-- ARGV[4]  TTL in milliseconds (the window's length): an idle window disappears by itself
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return redis.call('ZCARD', KEYS[1])

-- Put a claimed delivery back without an attempt (its endpoint is at its
-- concurrency limit, or this node is shutting down).
-- KEYS[1] delivery hash; KEYS[2] the project's due zset; KEYS[3] lease
-- zset; KEYS[4] projects zset. ARGV[1] id; ARGV[2] claim token; ARGV[3]
-- due (unix ms); ARGV[4] project id.
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'pending', 'claim', '')
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[4], 'LT', ARGV[3], ARGV[4])
return 1

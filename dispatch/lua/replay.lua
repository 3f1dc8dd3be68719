-- Move a dead delivery back to the schedule for a fresh round of attempts;
-- it keeps its id (the webhook-id) and its history.
-- KEYS[1] delivery hash; KEYS[2] attempts list; KEYS[3] the project's due
-- zset; KEYS[4] project DLQ; KEYS[5] endpoint DLQ; KEYS[6] projects zset.
-- ARGV[1] id; ARGV[2] now (ms); ARGV[3] project id.
if redis.call('HGET', KEYS[1], 'status') ~= 'dead' then
  return 0
end
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
redis.call('HSET', KEYS[1], 'status', 'pending', 'tries', 0, 'dead_at', '')
redis.call('HINCRBY', KEYS[1], 'replays', 1)
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[6], 'LT', ARGV[2], ARGV[3])
return 1

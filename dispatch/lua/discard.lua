-- Delete a dead delivery.
-- KEYS[1] delivery hash; KEYS[2] attempts list; KEYS[3] project DLQ;
-- KEYS[4] endpoint DLQ. ARGV[1] id.
if redis.call('HGET', KEYS[1], 'status') ~= 'dead' then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return 1

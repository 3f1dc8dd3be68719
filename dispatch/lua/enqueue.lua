-- Create a delivery unless it exists (enqueue is repeated after crashes;
-- the delivery id is derived from event, channel and endpoint).
-- KEYS[1] delivery hash; KEYS[2] the project's due zset; KEYS[3] the
-- projects zset (project → earliest due, a lower bound).
-- ARGV[1] id; ARGV[2] due (unix ms); ARGV[3] project id; ARGV[4..]
-- field/value pairs.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local fields = {}
for i = 4, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], 'LT', ARGV[2], ARGV[3])
return 1

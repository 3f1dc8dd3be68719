-- Create a channel: its record and first timeline entries, both expiring
-- after the retention.
-- KEYS[1] channel hash; KEYS[2] timeline list.
-- ARGV[1] retention (seconds); ARGV[2] number of hash field/value pairs n;
-- ARGV[3 .. 2+2n] the pairs; the rest: timeline entries.
local n = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 3, 2 + 2 * n))
redis.call('EXPIRE', KEYS[1], ARGV[1])
if #ARGV >= 3 + 2 * n then
  redis.call('RPUSH', KEYS[2], unpack(ARGV, 3 + 2 * n))
end
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1

-- Bring a put-off delivery forward, if it is still put off to the time it
-- was (not claimed and rescheduled since).
-- KEYS[1] the project's due zset; KEYS[2] projects zset.
-- ARGV[1] id; ARGV[2] the put-off due (unix ms); ARGV[3] now; ARGV[4]
-- project id. Returns 1 when moved.
local sc = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not sc or tonumber(sc) ~= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[2], 'LT', ARGV[3], ARGV[4])
return 1

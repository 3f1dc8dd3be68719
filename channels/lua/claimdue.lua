-- Claim up to ARGV[2] channels whose callback deadline is due at ARGV[1]
-- (unix ms): push each one's score to ARGV[3], so that no other node looks
-- at it until then (if this node dies before settling it, another does).
-- KEYS[1] deadline zset. Returns the channel ids.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], ARGV[3], id)
end
return ids

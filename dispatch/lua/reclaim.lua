-- Make deliveries whose lease ended before ARGV[1] (unix ms) due again at
-- once: the node sending them died. The attempt was not recorded, so it is
-- repeated with the same webhook-id.
-- KEYS[1] projects zset; KEYS[2] lease zset; ARGV[2] max; ARGV[3] hash
-- prefix; ARGV[4] due zset prefix (+ project id).
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[2], id)
  local pid = redis.call('HGET', ARGV[3] .. id, 'project_id')
  if pid then
    redis.call('ZADD', ARGV[4] .. pid, ARGV[1], id)
    redis.call('ZADD', KEYS[1], 'LT', ARGV[1], pid)
    redis.call('HSET', ARGV[3] .. id, 'status', 'pending', 'claim', '')
  end
end
return #ids

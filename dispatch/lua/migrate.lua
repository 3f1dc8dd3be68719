-- Move up to ARGV[1] deliveries from the single due zset of earlier
-- versions (KEYS[1]) into their projects' due zsets, keeping due times.
-- KEYS[2] projects zset; ARGV[2] hash prefix; ARGV[3] due zset prefix.
-- Returns how many moved.
local rows = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
for i = 1, #rows, 2 do
  local id, due = rows[i], rows[i + 1]
  redis.call('ZREM', KEYS[1], id)
  local pid = redis.call('HGET', ARGV[2] .. id, 'project_id')
  if pid then
    redis.call('ZADD', ARGV[3] .. pid, due, id)
    redis.call('ZADD', KEYS[2], 'LT', due, pid)
  end
end
return #rows / 2

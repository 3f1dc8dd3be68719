-- Append a task to the ready queue unless the queue is full.
-- KEYS[1] ready list; ARGV[1] channel id; ARGV[2] max depth.
-- Returns the new depth, or -1 when the queue is full.
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then
  return -1
end
return redis.call('RPUSH', KEYS[1], ARGV[1])

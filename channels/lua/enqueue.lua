-- Append a task to its project's queue (and the project to the ring if its
-- queue was empty), unless a limit refuses it; a refused task changes
-- nothing, its rate budget included.
-- KEYS[1] the project's queue; KEYS[2] the ring; KEYS[3] the ready counter
-- (project queues); KEYS[4] the legacy ready list (counted too);
-- KEYS[5] the project's rate key.
-- ARGV[1] channel id; ARGV[2] project id; ARGV[3] deployment-wide max
-- ready; ARGV[4] the project's max ready; ARGV[5] the project's rate
-- (tasks/s, 0: none); ARGV[6] its burst.
-- Returns {depth of the project's queue}, {-1} (deployment queue full),
-- {-2} (project queue full) or {-3, ms to wait} (rate limited).
-- The task is pushed first and taken back if refused (the depth the push
-- answers is the check), which spares the reads of a task that goes.
local depth = redis.call('RPUSH', KEYS[1], ARGV[1])
if depth > tonumber(ARGV[4]) then
  redis.call('RPOP', KEYS[1])
  return {-2}
end
local n = redis.call('INCR', KEYS[3]) + redis.call('LLEN', KEYS[4])
if n > tonumber(ARGV[3]) then
  redis.call('DECR', KEYS[3])
  redis.call('RPOP', KEYS[1])
  return {-1}
end
local rate = tonumber(ARGV[5])
if rate > 0 then
  local wait = gcra(KEYS[5], rate, tonumber(ARGV[6]))
  if wait > 0 then
    redis.call('DECR', KEYS[3])
    redis.call('RPOP', KEYS[1])
    return {-3, wait}
  end
end
if depth == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[2])
end
return {depth}

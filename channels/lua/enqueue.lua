-- Append a task to its project's queue (and the project to the ring if its
-- queue was empty), unless a limit refuses it; a refused task changes
-- nothing, its rate budget included.
-- K[1] the project's queue; K[2] the ring; K[3] the ready counter
-- (project queues); K[4] the legacy ready list (counted too);
-- K[5] the project's rate key.
-- A[1] channel id; A[2] project id; A[3] deployment-wide max
-- ready; A[4] the project's max ready; A[5] the project's rate
-- (tasks/s, 0: none); A[6] its burst; A[7] the tasks of the rate to take
-- at once (the node's block, gcra.lua); A[8] '0' when the legacy lists
-- are known empty (not read), else they are counted.
-- Returns {depth of the project's queue, tasks of the rate taken (0 when
-- not checked)}, {-1} (deployment queue full), {-2} (project queue full)
-- or {-3, ms to wait} (rate limited).
local function enqueue(K, A)
  -- The task is pushed first and taken back if refused (the depth the push
  -- answers is the check), which spares the reads of a task that goes.
  local depth = redis.call('RPUSH', K[1], A[1])
  if depth > tonumber(A[4]) then
    redis.call('RPOP', K[1])
    return {-2}
  end
  local n = redis.call('INCR', K[3])
  if A[8] ~= '0' then
    n = n + redis.call('LLEN', K[4])
  end
  if n > tonumber(A[3]) then
    redis.call('DECR', K[3])
    redis.call('RPOP', K[1])
    return {-1}
  end
  local rate = tonumber(A[5])
  local taken = 0
  if rate > 0 then
    local wait
    wait, taken = gcra(K[5], rate, tonumber(A[6]), A[7])
    if wait > 0 then
      redis.call('DECR', K[3])
      redis.call('RPOP', K[1])
      return {-3, wait}
    end
  end
  if depth == 1 then
    redis.call('RPUSH', K[2], A[2])
  end
  return {depth, taken}
end

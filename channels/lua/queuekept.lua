-- Make sure a kept submission's task runs on a Cluster (withdraw): a
-- record a repeat of its Idempotency-Key was answered with stands, and its
-- enqueue may have refused it (taking its intent out), been lost, or be
-- still on its way. Its intent, still as written (ARGV[4]: the enqueue has
-- not run), runs out now: the enqueue, should it run later, then pushes
-- nothing (enqueue_main.lua), and the reclaimer queues the task once.
-- Otherwise, unless the task is leased (a run) or queued, its intent goes
-- back, already run out. (A task that finished in between is claimed
-- again and found done: its side effects are redone, idempotent.)
-- KEYS[1] the lease set; KEYS[2] the project's queue (same slot).
-- ARGV[1] the lease member; ARGV[2] the channel id; ARGV[3] now (unix ms);
-- ARGV[4] the intent's deadline as written (0: unknown).
-- Returns 1 when the intent runs out now, 0 when the task was leased or
-- queued.
local at = redis.call('ZSCORE', KEYS[1], ARGV[1])
if at then
  if ARGV[4] == '0' or tonumber(at) ~= tonumber(ARGV[4]) then
    return 0
  end
elseif redis.call('LPOS', KEYS[2], ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1

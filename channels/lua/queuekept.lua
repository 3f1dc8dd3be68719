-- Make sure a kept submission's task runs on a Cluster (withdraw): a
-- record a repeat of its Idempotency-Key was answered with stands, and its
-- enqueue may have refused it (taking its intent out) or been lost. Unless
-- the task is leased (its intent, or a run) or queued, its intent goes back,
-- already run out, so the reclaimer queues it.
-- KEYS[1] the lease set; KEYS[2] the project's queue (same slot).
-- ARGV[1] the lease member; ARGV[2] the channel id; ARGV[3] now (unix ms).
-- Returns 1 when the intent went back, 0 when the task was leased or queued.
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('LPOS', KEYS[2], ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1

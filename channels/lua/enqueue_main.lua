-- enqueue.lua run alone (a Cluster's submission): KEYS[1..5] and
-- ARGV[1..8] are its K and A. KEYS[6] the lease set, ARGV[9] the task's
-- member there: the submission's intent, written before its record so
-- that a node that dies between the record and this script leaves the
-- task to be requeued when the intent's lease runs out (reclaim.lua). It
-- goes now, whether the task is queued or refused.
redis.call('ZREM', KEYS[6], ARGV[9])
return enqueue(KEYS, ARGV)

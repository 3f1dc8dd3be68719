-- enqueue.lua run alone (a Cluster's submission): KEYS[1..5] and
-- ARGV[1..8] are its K and A. KEYS[6] the lease set, ARGV[9] the task's
-- member there, ARGV[10] its score: the submission's intent, written
-- before its record so that a node that dies between the record and this
-- script leaves the task to be requeued when the intent runs out
-- (reclaim.lua). It goes now, whether the task is queued or refused. If
-- it is not there as written (requeued already, then maybe claimed: the
-- member is the claim's lease now; or this script sent again after its
-- answer was lost), the task is on its way: answered as queued ({0, 0}),
-- nothing pushed and no lease touched.
local at = redis.call('ZSCORE', KEYS[6], ARGV[9])
if not at or tonumber(at) ~= tonumber(ARGV[10]) then
  return {0, 0}
end
redis.call('ZREM', KEYS[6], ARGV[9])
return enqueue(KEYS, ARGV)

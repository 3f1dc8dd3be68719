-- Cancel a delivery's retries (its channel no longer needs it: the callback
-- came or its deadline passed). A delivery waiting for an attempt stops at
-- once; one being attempted now is marked, and the attempt's outcome then
-- ends it instead of scheduling a retry or dead-lettering it.
-- KEYS[1] delivery hash; KEYS[2] attempts list; KEYS[3] due zset;
-- KEYS[4] its endpoint's waiting set (see claim.lua).
-- ARGV[1] id; ARGV[2] reason; ARGV[3] now (RFC 3339); ARGV[4] TTL seconds.
-- Returns 1 when stopped, 2 when marked, 0 when there was nothing to cancel.
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'pending' or st == 'retrying' then
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'next_at', '', 'cancel', ARGV[2], 'updated_at', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
  return 1
end
if st == 'delivering' and (redis.call('HGET', KEYS[1], 'cancel') or '') == '' then
  redis.call('HSET', KEYS[1], 'cancel', ARGV[2])
  return 2
end
return 0

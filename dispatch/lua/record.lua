-- Record an attempt's outcome, if the claim is still ours (a delivery
-- reclaimed after its lease ran out belongs to the newer claim).
-- KEYS[1] delivery hash; KEYS[2] attempts list; KEYS[3] due zset;
-- KEYS[4] lease zset; KEYS[5] project DLQ zset; KEYS[6] endpoint DLQ zset.
-- ARGV[1] id; ARGV[2] claim token; ARGV[3] outcome: ok | retry | dead;
-- ARGV[4] now (unix ms); ARGV[5] attempt JSON; ARGV[6] next due (unix ms,
-- retry); ARGV[7] TTL seconds once final; ARGV[8] last status code;
-- ARGV[9] last error; ARGV[10] now (RFC 3339).
-- A retry or dead letter of a delivery whose retries were cancelled ends it
-- as cancelled instead (see cancel.lua).
-- Returns 1 when recorded as asked, 2 when recorded as cancelled instead,
-- 0 when the claim was stale.
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('RPUSH', KEYS[2], ARGV[5])
redis.call('HSET', KEYS[1], 'claim', '', 'last_status', ARGV[8], 'last_error', ARGV[9], 'updated_at', ARGV[10])
local outcome = ARGV[3]
if outcome ~= 'ok' then
  local cancel = redis.call('HGET', KEYS[1], 'cancel')
  if cancel and cancel ~= '' then
    outcome = 'cancelled' -- see cancel.lua
  end
end
if outcome == 'ok' then
  redis.call('HSET', KEYS[1], 'status', 'succeeded', 'next_at', '')
  redis.call('EXPIRE', KEYS[1], ARGV[7])
  redis.call('EXPIRE', KEYS[2], ARGV[7])
elseif outcome == 'cancelled' then
  redis.call('HINCRBY', KEYS[1], 'tries', 1)
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'next_at', '')
  redis.call('EXPIRE', KEYS[1], ARGV[7])
  redis.call('EXPIRE', KEYS[2], ARGV[7])
elseif outcome == 'retry' then
  redis.call('HINCRBY', KEYS[1], 'tries', 1)
  redis.call('HSET', KEYS[1], 'status', 'retrying', 'next_at', ARGV[6])
  redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
else
  redis.call('HINCRBY', KEYS[1], 'tries', 1)
  redis.call('HSET', KEYS[1], 'status', 'dead', 'next_at', '', 'dead_at', ARGV[4])
  redis.call('ZADD', KEYS[5], ARGV[4], ARGV[1])
  redis.call('ZADD', KEYS[6], ARGV[4], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[7])
  redis.call('EXPIRE', KEYS[2], ARGV[7])
end
if outcome == 'cancelled' then
  return 2
end
return 1

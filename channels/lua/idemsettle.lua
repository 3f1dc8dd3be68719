-- Settle whether the first request of an Idempotency-Key was accepted,
-- for a repeat that found the key's reservation run out unconfirmed
-- (ClaimIdempotency), so that the repeat's answer holds afterwards.
-- KEYS[1] the first request's channel record; KEYS[2] its withdrawn mark
-- (same slot). ARGV[1] the mark's time to live (seconds).
-- Returns 1 when the record stands: it is marked kept (field "kept"), so
-- that a take-back of its submission still on its way to Redis
-- (unrecord.lua) leaves it: the repeat replays it as accepted. Returns 0
-- when there is none: the channel is marked withdrawn, so that its
-- submission, should Redis run it later, records and queues nothing
-- (submit.lua, record_main.lua): the repeat submits afresh, and one task
-- stands for the key.
local st = redis.call('HGET', KEYS[1], 'status')
if st or redis.call('EXISTS', KEYS[1]) == 1 then
  if st == 'pending' or st == 'generating' then -- else nothing takes it back
    redis.call('HSET', KEYS[1], 'kept', '1')
  end
  return 1
end
redis.call('SET', KEYS[2], 1, 'EX', ARGV[1])
return 0

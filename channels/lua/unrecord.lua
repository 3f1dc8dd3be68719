-- Take back the record of a submission that was not accepted (its answer
-- was an error), unless a worker has started its task since: the
-- submission's commands ran after its node stopped waiting, so the task
-- was accepted after all, and it runs (its Idempotency-Key's reservation,
-- kept, answers a retry with it).
-- KEYS[1] channel hash; KEYS[2] timeline list (same slot); on one Redis,
-- KEYS[3..] the log indexes submit.lua wrote its entries in, taken out
-- with the record. ARGV[1] the channel id (with KEYS[3..]).
-- Returns 1 when removed, 2 when not there (Redis may not have run the
-- submission yet), 0 when kept.
local st = redis.call('HGET', KEYS[1], 'status')
if st and st ~= 'pending' then
  return 0
end
if not st and redis.call('EXISTS', KEYS[1]) == 0 then
  return 2
end
redis.call('DEL', KEYS[1], KEYS[2])
for i = 3, #KEYS do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
return 1

-- Take back the record of a submission that was not accepted (its answer
-- was an error), unless a worker has started its task since: the
-- submission's commands ran after its node stopped waiting, so the task
-- was accepted after all, and it runs (its Idempotency-Key's reservation,
-- kept, answers a retry with it).
-- Unless kept, the channel is marked withdrawn (KEYS[2], for ARGV[1]
-- seconds; 0: not marked, for a refusal, whose script has run): a
-- submission Redis has not run yet (its round trip still on its way, or
-- sent again) then records and queues nothing when it does run
-- (submit.lua, record_main.lua), so it is known not to run.
-- KEYS[1] channel hash; KEYS[2] its withdrawn mark (same slot); on one
-- Redis, KEYS[3..] the log indexes submit.lua wrote its entries in, taken
-- out with the record. ARGV[1] the mark's time to live (seconds); ARGV[2]
-- the channel id (with KEYS[3..]).
-- With ARGV[3] (a lease member) and ARGV[4] (its deadline), the submission
-- asked to take its task (submit.lua) and the last key is the lease set: a
-- task it took and nobody has run (its lease untouched since, one run
-- begun) is taken back as if still pending.
-- A record a repeat of its Idempotency-Key found standing (field "kept",
-- idemsettle.lua) is kept: the repeat was answered that it was accepted.
-- Returns 1 when removed, 2 when not there (marked: it will not be
-- recorded), 0 when kept because a worker started it, 3 when kept for a
-- repeat, not started.
local rec = redis.call('HMGET', KEYS[1], 'status', 'kept')
if rec[2] then
  if rec[1] == 'pending' then
    return 3
  end
  return 0
end
local st = rec[1]
local last = #KEYS
if ARGV[3] then
  last = last - 1
  if st == 'generating' and redis.call('HGET', KEYS[1], 'runs') == '1'
    and tonumber(redis.call('ZSCORE', KEYS[#KEYS], ARGV[3])) == tonumber(ARGV[4]) then
    redis.call('ZREM', KEYS[#KEYS], ARGV[3])
    st = 'pending'
  end
end
if st and st ~= 'pending' then
  return 0
end
if ARGV[1] ~= '0' then
  redis.call('SET', KEYS[2], 1, 'EX', ARGV[1])
end
if not st and redis.call('EXISTS', KEYS[1]) == 0 then
  return 2
end
redis.call('DEL', KEYS[1])
for i = 3, last do
  redis.call('ZREM', KEYS[i], ARGV[2])
end
return 1

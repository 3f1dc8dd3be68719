-- Settle a take whose node does not know its outcome (its submission's
-- answer was lost, and taking it back failed too), once Redis answers
-- (settleTake). It never creates the task, and it may run twice (its own
-- answer lost): the second run finds the lease it renewed.
-- KEYS[1] the channel's record; KEYS[2] its withdrawn mark; KEYS[3] the
-- lease set. ARGV[1] the lease member; ARGV[2] the take's lease deadline
-- (unix ms); ARGV[3] now (unix ms); ARGV[4] the renewed deadline (the
-- same on every call for one take); ARGV[5], ARGV[6] start.lua's now and
-- entry; ARGV[7] the mark's time to live (seconds).
-- Returns start.lua's reply when the take ran and its lease is untouched
-- and more than a second from running out (then renewed until ARGV[4]), or
-- already renewed by this script: the calling node runs it. Else {}: no
-- record (the channel is marked withdrawn, so a submission Redis runs
-- later writes nothing: the task will not run), or the record stands and
-- runs as any other (queued, or its lease reclaimed or about to be).
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[2], 1, 'EX', ARGV[7])
  return {}
end
local score = tonumber(redis.call('ZSCORE', KEYS[3], ARGV[1]))
if score ~= tonumber(ARGV[4]) then
  if score ~= tonumber(ARGV[2]) or score <= tonumber(ARGV[3]) + 1000 then
    return {}
  end
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
end
return start(KEYS[1], nil, ARGV[5], ARGV[6], ARGV[6], true)

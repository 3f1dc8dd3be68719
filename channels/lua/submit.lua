-- A submission on one Redis (not a Cluster, where the channel and the
-- queue live in different slots): enqueue.lua, then, if the task was
-- queued, record.lua, in one script, so that a refused task writes
-- nothing and a queued one is never claimed before its record exists.
-- KEYS[1..5], ARGV[1..8]: enqueue.lua's; KEYS[6..7], ARGV[9..]: record.lua's.
-- Returns enqueue.lua's reply.
local r = enqueue(KEYS, ARGV)
if r[1] >= 0 then
  record({KEYS[6], KEYS[7]}, {unpack(ARGV, 9)})
end
return r

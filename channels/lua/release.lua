-- Give leased tasks back (graceful shutdown), at the head of their
-- project's queue (the requeue prelude): only those still leased, so a task
-- another node already reclaimed is not queued twice.
-- KEYS[1] lease zset; KEYS[2..5] see requeue.lua; ARGV[1] the legacy ring
-- entry; ARGV[2..] lease members. Returns how many moved.
local n = 0
for i = #ARGV, 2, -1 do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    requeue(ARGV[i])
    n = n + 1
  end
end
if legacy then
  adopt()
end
return n

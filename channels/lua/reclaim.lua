-- Put tasks whose lease ended before ARGV[2] (unix ms) back at the head of
-- their project's queue (the requeue prelude): the node that held them died
-- or stalled. Then put the legacy list on the ring if it needs to be.
-- KEYS[1] lease zset; KEYS[2..5] see requeue.lua; ARGV[1] the legacy ring
-- entry; ARGV[3] the most to move. Returns how many moved.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for i = #ids, 1, -1 do
  redis.call('ZREM', KEYS[1], ids[i])
  requeue(ids[i])
end
adopt()
return #ids

-- Put tasks whose lease ended before ARGV[1] (unix ms) back at the head of
-- the ready queue: the node that held them died or stalled.
-- KEYS[1] ready list; KEYS[2] lease zset; ARGV[2] max to move.
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for i = #ids, 1, -1 do
  redis.call('ZREM', KEYS[2], ids[i])
  redis.call('LPUSH', KEYS[1], ids[i])
end
return #ids

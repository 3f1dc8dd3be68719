-- Give leased tasks back (graceful shutdown): only those still leased, so a
-- task another node already reclaimed is not queued twice.
-- KEYS[1] ready list; KEYS[2] lease zset; ARGV = ids.
local n = 0
for i = #ARGV, 1, -1 do
  if redis.call('ZREM', KEYS[2], ARGV[i]) == 1 then
    redis.call('LPUSH', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n

-- Move up to ARGV[1] tasks from the ready queue to the lease set, leased
-- until ARGV[2] (unix ms). One script, so a task is never in neither place.
-- KEYS[1] ready list; KEYS[2] lease zset. Returns the claimed ids.
local ids = redis.call('LPOP', KEYS[1], ARGV[1])
if not ids then
  return {}
end
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[2], ARGV[2], id)
end
return ids

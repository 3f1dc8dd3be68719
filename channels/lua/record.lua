-- Create a channel: its record and first timeline entries, both expiring
-- after the retention.
-- K[1] channel hash; K[2] timeline list.
-- A[1] retention (seconds); A[2] number of hash field/value pairs n;
-- A[3 .. 2+2n] the pairs; the rest: timeline entries.
local function record(K, A)
  local n = tonumber(A[2])
  redis.call('HSET', K[1], unpack(A, 3, 2 + 2 * n))
  redis.call('EXPIRE', K[1], A[1])
  if #A >= 3 + 2 * n then
    redis.call('RPUSH', K[2], unpack(A, 3 + 2 * n))
  end
  redis.call('EXPIRE', K[2], A[1])
  return 1
end

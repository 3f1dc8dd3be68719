-- Create a channel: its record with its first timeline entries (tl.lua),
-- expiring after the retention.
-- K[1] channel hash; K[2] not written (see record_main.lua).
-- A[1] retention (seconds); A[2] number of hash field/value pairs n;
-- A[3 .. 2+2n] the pairs; the rest: timeline entries.
local function record(K, A)
  local n = tonumber(A[2])
  local fields = {unpack(A, 3, 2 + 2 * n)}
  if #A >= 3 + 2 * n then
    fields[#fields + 1] = 'tl'
    fields[#fields + 1] = tljoin(false, {unpack(A, 3 + 2 * n)})
  end
  redis.call('HSET', K[1], unpack(fields))
  redis.call('EXPIRE', K[1], A[1])
  return 1
end

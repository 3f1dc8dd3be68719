-- Take up to ARGV[2] notes of KEYS[1] (a ZSET scored with when each is
-- due, unix ms) due at ARGV[1], each put back ARGV[3] ms later: the nodes'
-- rounds share the notes out instead of each handling the same ones, and
-- a note whose node died midway is due again then. The round removes the
-- notes it handled. Returns the notes taken.
local ms = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #ms > 0 then
  local later = tonumber(ARGV[1]) + tonumber(ARGV[3])
  local zs = {}
  for i, m in ipairs(ms) do
    zs[2 * i - 1] = later
    zs[2 * i] = m
  end
  redis.call('ZADD', KEYS[1], 'XX', unpack(zs))
end
return ms

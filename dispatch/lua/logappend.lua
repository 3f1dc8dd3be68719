-- Appends entries to a channel's delivery log and keeps it at least ARGV[1]
-- ms more: together, so the log never stands without an expiry, and an
-- expiry already further out (an event-driven channel's) is not shortened.
-- An entry already among the log's last ones is not appended again: a
-- round trip sent again after its answer was lost (a timeout) repeats its
-- entries, and no two entries are the same (each has its time, delivery
-- and attempt).
--
-- KEYS[1] P:dl:{cid}  LIST entries (JSON), oldest first
-- ARGV[1] how long to keep the log from now, ms
-- ARGV[2..] the entries
local seen = {}
for _, v in ipairs(redis.call('LRANGE', KEYS[1], -(#ARGV + 15), -1)) do
  seen[v] = true
end
local add = {}
for i = 2, #ARGV do
  if not seen[ARGV[i]] then
    add[#add + 1] = ARGV[i]
    seen[ARGV[i]] = true
  end
end
if #add > 0 then
  redis.call('RPUSH', KEYS[1], unpack(add))
end
local ttl = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1

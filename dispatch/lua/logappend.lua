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
local window = #ARGV + 15 -- the log's last entries looked at (LPOS, in C)
local add = {}
for i = 2, #ARGV do
  local again = redis.call('LPOS', KEYS[1], ARGV[i], 'RANK', -1, 'MAXLEN', window)
  for j = 1, #add do
    again = again or add[j] == ARGV[i]
  end
  if not again then
    add[#add + 1] = ARGV[i]
  end
end
local fresh = false -- the log begins with these entries: it has no expiry to ask for
if #add > 0 then
  fresh = redis.call('RPUSH', KEYS[1], unpack(add)) == #add
end
local ttl = tonumber(ARGV[1])
if fresh or redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1

-- Appends entries to a channel's delivery log and keeps it at least ARGV[1]
-- ms more: together, so the log never stands without an expiry, and an
-- expiry already further out (an event-driven channel's) is not shortened.
--
-- KEYS[1] P:dl:{cid}  LIST entries (JSON), oldest first
-- ARGV[1] how long to keep the log from now, ms
-- ARGV[2..] the entries
redis.call('RPUSH', KEYS[1], unpack(ARGV, 2))
local ttl = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1

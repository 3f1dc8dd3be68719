-- Appends one message to a channel's history and fans it out, once.
--
-- KEYS[1] P:ch:{cid}:hist  LIST of entries {"seq":N,"payload":<message>}
-- KEYS[2] P:ch:{cid}:seq   STRING, the last sequence number given out
-- ARGV[1] the message (JSON object, stored and sent byte for byte)
-- ARGV[2] entries kept in the history
-- ARGV[3] retention in seconds (both keys)
-- ARGV[4] the pub/sub channel of the room, P:room:{cid}
--
-- Returns the new entry's seq, or 0 when the last entry already carries this
-- exact message: a publisher that crashed after publishing and runs again
-- must not show the browser the same message twice.
local suffix = ',"payload":' .. ARGV[1] .. '}'
local last = redis.call('LINDEX', KEYS[1], -1)
if last and #last > #suffix and string.sub(last, -#suffix) == suffix
    and string.match(string.sub(last, 1, #last - #suffix), '^{"seq":%d+$') then
  return 0
end
local seq = redis.call('INCR', KEYS[2])
local entry = '{"seq":' .. seq .. suffix
redis.call('RPUSH', KEYS[1], entry)
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[4], entry)
return seq

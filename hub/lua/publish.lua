-- Appends one message to a channel's history and fans it out, once.
--
-- KEYS[1] P:ch:{cid}:hist  LIST of entries {"seq":N,"payload":<message>}
-- KEYS[2] P:ch:{cid}:seq   STRING, the last sequence number given out
-- ARGV[1] the message (JSON object, stored and sent byte for byte)
-- ARGV[2] entries kept in the history
-- ARGV[3] retention in seconds (both keys)
-- ARGV[4] the pub/sub channel of the room, P:room:{cid}
-- ARGV[5] "1" on a Redis Cluster: SPUBLISH, so that only the slot's master
--         and its replicas see the message (the channel shares the keys'
--         hash tag, so the slot is theirs); else PUBLISH
--
-- Returns the new entry's seq, or 0 when an entry of the history already
-- carries this exact message: a publisher that crashed after publishing and
-- runs again must not show the browser the same message twice. (A channel's
-- messages differ from one another, each with its own status and time, so
-- only a repeat matches; the history holds at most ARGV[2] entries.)
local suffix = ',"payload":' .. ARGV[1] .. '}'
for _, e in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if #e > #suffix and string.sub(e, -#suffix) == suffix
      and string.match(string.sub(e, 1, #e - #suffix), '^{"seq":%d+$') then
    return 0
  end
end
local seq = redis.call('INCR', KEYS[2])
local entry = '{"seq":' .. seq .. suffix
if redis.call('RPUSH', KEYS[1], entry) > tonumber(ARGV[2]) then
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if ARGV[5] == '1' then
  redis.call('SPUBLISH', ARGV[4], entry)
else
  redis.call('PUBLISH', ARGV[4], entry)
end
return seq

-- Appends one message to a channel's history and fans it out, once.
--
-- KEYS[1] P:ch:{cid}:hist  LIST of entries {"seq":N,"payload":<message>}
-- KEYS[2] P:ch:{cid}       the channel's record (a hash), given with a
--                          final message only: its seq is noted there
--                          (field room_seq) if the record exists
-- ARGV[1] the message (JSON object, stored and sent byte for byte)
-- ARGV[2] entries kept in the history
-- ARGV[3] the history's time to live in seconds: the retention, or the
--         hot window for a final message
-- ARGV[4] the pub/sub channel of the room, P:room:{cid}
-- ARGV[5] "1" on a Redis Cluster: SPUBLISH, so that only the slot's master
--         and its replicas see the message (the channel shares the keys'
--         hash tag, so the slot is theirs); else PUBLISH
-- ARGV[6] "1" for a final message: the history's streamed entries
--         (Hub.AppendStreamIn) are dropped with it, the final message holding the
--         whole answer
--
-- Streamed entries ({"seq":N,"event":...}) do not count against ARGV[2]:
-- the history keeps ARGV[2] messages besides them.
--
-- The new entry's seq is one more than the history's last (the history is
-- trimmed from its head, never emptied, and expires as a whole; earlier
-- versions kept the last seq in a key of its own, P:ch:{cid}:seq, always
-- equal to the history's last and expiring with it, so a channel written
-- by them goes on from the same number).
--
-- Returns the new entry's seq, or 0 when an entry of the history already
-- carries this exact message: a publisher that crashed after publishing and
-- runs again must not show the browser the same message twice. (A channel's
-- messages differ from one another, each with its own status and time, so
-- only a repeat matches; the history holds at most ARGV[2] entries.)
local suffix = ',"payload":' .. ARGV[1] .. '}'
local last = 0
local kept, streamed = {}, 0
for _, e in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if #e > #suffix and string.sub(e, -#suffix) == suffix
      and string.match(string.sub(e, 1, #e - #suffix), '^{"seq":%d+$') then
    return 0
  end
  last = tonumber(string.match(e, '^{"seq":(%d+),')) or last
  if string.match(e, '^{"seq":%d+,"event":') then
    streamed = streamed + 1
  else
    kept[#kept + 1] = e
  end
end
local seq = last + 1
local entry = '{"seq":' .. seq .. suffix
local function fanout()
  if ARGV[5] == '1' then
    redis.call('SPUBLISH', ARGV[4], entry)
  else
    redis.call('PUBLISH', ARGV[4], entry)
  end
  return seq
end
-- A final message that is the channel's first (a standard task's only
-- message) needs no history when the record holds it: a join rebuilds it
-- from there (room_seq, message), as it does once the history has
-- expired. A repeat finds room_seq set, and is sent again: the completion
-- may have written room_seq itself, its publish (Hub.PublishLoneIn) cut
-- short by a crash, and a socket still waiting must get it; one that had
-- it has ended its join there and drops it.
if ARGV[6] == '1' and last == 0 and KEYS[2] then
  local rec = redis.call('HMGET', KEYS[2], 'message', 'room_seq')
  if rec[1] == ARGV[1] then
    if rec[2] then
      seq = tonumber(rec[2])
      entry = '{"seq":' .. seq .. suffix
      fanout()
      return 0
    end
    redis.call('HSET', KEYS[2], 'room_seq', seq)
    return fanout()
  end
end
if ARGV[6] == '1' and streamed > 0 then
  redis.call('DEL', KEYS[1])
  kept[#kept + 1] = entry
  for i = math.max(1, #kept - tonumber(ARGV[2]) + 1), #kept, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(kept, i, math.min(i + 999, #kept)))
  end
else
  local cap = tonumber(ARGV[2]) + streamed
  if redis.call('RPUSH', KEYS[1], entry) > cap then
    redis.call('LTRIM', KEYS[1], -cap, -1)
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], 'room_seq', seq)
end
return fanout()

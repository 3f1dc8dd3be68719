-- Appends one streamed piece of a channel's answer (event "chunk" or
-- "chunk_reset") to the channel's history and fans it out, once.
--
-- KEYS[1] P:ch:{cid}:hist  the channel's history (see publish.lua)
-- ARGV[1] the event name
-- ARGV[2] the payload (a JSON object, stored and sent byte for byte)
-- ARGV[3] the most entries the history may hold with its chunks
--         (HistoryMax + StreamMax)
-- ARGV[4] the history's time to live in seconds (the retention), set when
--         this entry starts the history
-- ARGV[5] the pub/sub channel of the room
-- ARGV[6] "1" on a Redis Cluster: SPUBLISH
--
-- The entry is {"seq":N,"event":<name>,"payload":<payload>}, numbered as
-- publish.lua numbers messages. Only the history's last few entries are
-- read (not the whole history, as a message's publish does): a chunk is
-- published by one stream in order, so a repeat (a round trip retried after
-- it ran) can only be one of the last.
--
-- Returns the new entry's seq; 0 for a repeat; -1 when the channel's final
-- message is already in (a chunk after it would never be shown: the join
-- closed); -2 when the history is full of chunks (the stream goes on
-- unseen; the final message still carries the whole answer).
local suffix = ',"event":"' .. ARGV[1] .. '","payload":' .. ARGV[2] .. '}'
local tail = redis.call('LRANGE', KEYS[1], -4, -1)
local last = 0
for _, e in ipairs(tail) do
  if #e > #suffix and string.sub(e, -#suffix) == suffix
      and string.match(string.sub(e, 1, #e - #suffix), '^{"seq":%d+$') then
    return 0
  end
  last = tonumber(string.match(e, '^{"seq":(%d+),')) or last
end
local e = tail[#tail]
if e and not string.match(e, '^{"seq":%d+,"event":') then
  local ok, v = pcall(cjson.decode, e)
  if ok and type(v) == 'table' and type(v.payload) == 'table' then
    local st = v.payload.status
    if st == 'success' or st == 'completed' or st == 'error' then
      return -1
    end
  end
end
local seq = last + 1
local entry = '{"seq":' .. seq .. suffix
local n = redis.call('RPUSH', KEYS[1], entry)
if n > tonumber(ARGV[3]) then
  redis.call('RPOP', KEYS[1])
  return -2
end
if n == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
if ARGV[6] == '1' then
  redis.call('SPUBLISH', ARGV[5], entry)
else
  redis.call('PUBLISH', ARGV[5], entry)
end
return seq

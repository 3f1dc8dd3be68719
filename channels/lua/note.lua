-- Append an entry to a channel's timeline, which lives as long as its
-- record: also once the channel is folded and its list is gone (the
-- entry then starts the list anew, read after the folded document's).
-- KEYS[1] channel hash; KEYS[2] timeline list. ARGV[1] the entry; ARGV[2]
-- (optional) how long it lives (ms) when the record has left Redis for
-- the archive.
-- Returns 1, or 0 when the record has expired (nothing written).
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 and ARGV[2] then
  ttl = tonumber(ARGV[2])
end
if ttl < 0 then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ttl)
return 1

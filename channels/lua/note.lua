-- Append an entry to a channel's timeline, which lives as long as its
-- record: in the record (tl.lua), also once the channel is folded (the
-- entry is then read after the folded document's); in the list when the
-- record has left Redis for the archive (ARGV[2] set).
-- KEYS[1] channel hash; KEYS[2] timeline list. ARGV[1] the entry; ARGV[2]
-- (optional) how long it lives (ms) when the record has left Redis for
-- the archive.
-- Returns 1, or 0 when the record has expired (nothing written).
if redis.call('EXISTS', KEYS[1]) == 1 then
  tlappend(KEYS[1], {ARGV[1]})
  return 1
end
if not ARGV[2] then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]))
return 1

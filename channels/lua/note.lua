-- Append an entry to a channel's timeline, which lives as long as its
-- record: in the record (tl.lua), also once the channel is folded (the
-- entry is then read after the folded document's); in the list when the
-- record has left Redis for the archive (ARGV[2] set).
-- KEYS[1] channel hash; KEYS[2] timeline list. ARGV[1] the entry; ARGV[2]
-- (optional) how long it lives (ms) when the record has left Redis for
-- the archive.
-- A record whose timeline has reached 256 KiB (a backend sending
-- refused callbacks again and again) counts further notes in its field
-- tl_dropped instead: each append rewrites the field whole.
-- Returns 1, or 0 when the record has expired or the note was only
-- counted (nothing written).
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HSTRLEN', KEYS[1], 'tl') >= 262144 then
    redis.call('HINCRBY', KEYS[1], 'tl_dropped', 1)
    return 0
  end
  tlappend(KEYS[1], {ARGV[1]})
  return 1
end
if not ARGV[2] then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]))
return 1

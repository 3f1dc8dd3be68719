-- Remove a settled channel from Redis once the archive holds it
-- (archive.go), if its lists and its record's timeline (field tl) are
-- still as long as when they were read (else "moved": it is read and
-- stored again next round).
-- KEYS[1] channel hash; KEYS[2] timeline list; KEYS[3] delivery log list;
-- KEYS[4] its folded document.
-- ARGV[1] the timeline list's length read; ARGV[2] the delivery log's;
-- ARGV[3] the record's timeline's, in bytes.
-- Returns "ok", "moved", or "gone" (removed already: lists written since
-- are entries after the move, and stay).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 'gone'
end
if redis.call('LLEN', KEYS[2]) ~= tonumber(ARGV[1]) or redis.call('LLEN', KEYS[3]) ~= tonumber(ARGV[2])
    or redis.call('HSTRLEN', KEYS[1], 'tl') ~= tonumber(ARGV[3]) then
  return 'moved'
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 'ok'

-- Fold a settled channel past its hot window (fold.go): its document takes
-- the place of its final message, metadata, timeline and delivery log, if
-- the lists and the record's timeline (field tl) are still as long as when
-- they were read (else "moved": read again next round).
-- KEYS[1] channel hash; KEYS[2] timeline list; KEYS[3] delivery log list;
-- KEYS[4] the document's key.
-- ARGV[1] the document; ARGV[2] the timeline's length read; ARGV[3] the
-- delivery log's; ARGV[4] the retention (ms), for a record without expiry;
-- ARGV[5] the record's timeline's length read, in bytes.
-- Returns "ok", "done" (folded before), "gone" (expired), "moved", or
-- "live" (not settled: queued by a run that lost its lease with a final
-- status the winner did not have; put off, fold.go's putOff).
if redis.call('EXISTS', KEYS[4]) == 1 then
  return 'done'
end
local st = redis.call('HGET', KEYS[1], 'status')
if st and st ~= 'success' and st ~= 'error' and st ~= 'completed' then
  return 'live'
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then
  redis.call('DEL', KEYS[2]) -- a list a node of an earlier version began without expiry
  return 'gone'
end
if ttl == -1 then
  ttl = tonumber(ARGV[4])
end
local all = redis.call('HGETALL', KEYS[1])
local tl = 0
for i = 1, #all, 2 do
  if all[i] == 'tl' then
    tl = #all[i + 1]
  end
end
if redis.call('LLEN', KEYS[2]) ~= tonumber(ARGV[2]) or redis.call('LLEN', KEYS[3]) ~= tonumber(ARGV[3])
    or tl ~= tonumber(ARGV[5] or '0') then
  return 'moved'
end
redis.call('SET', KEYS[4], ARGV[1], 'PX', ttl)
-- The record is written anew without its big fields: Redis keeps a hash
-- in its compact encoding only if it never held a big value. The live
-- fields (service.go, liveFields) go too, should its compaction have been
-- cut short.
local drop = {message = true, metadata = true, task = true, result = true, runs = true, hook = true, sim = true,
  due_msg = true, due_status = true, deadline = true, announced = true, cb_parts = true, kept = true, tl = true}
local keep = {}
for i = 1, #all, 2 do
  if not drop[all[i]] then
    keep[#keep + 1] = all[i]
    keep[#keep + 1] = all[i + 1]
  end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
if #keep > 0 then
  redis.call('HSET', KEYS[1], unpack(keep))
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 'ok'

-- Settle a channel whose callback deadline came: if it still awaits its
-- callback, it takes its due outcome (the timeout error, or the
-- playground's simulated callback) in the same compare-and-set a callback
-- goes through, so exactly one of them wins.
-- KEYS[1] channel hash; KEYS[2] timeline list (not written: the entry goes
-- to the record's, tl.lua).
-- ARGV[1] now (unix ms); ARGV[2] now (RFC 3339); ARGV[3] timeline entry of
-- a timeout; ARGV[4] timeline entry of a simulated callback; ARGV[5],
-- ARGV[6] the "broadcast" timeline entries of an error and of a completed
-- final message (empty on a node without rooms); ARGV[7] how long the
-- generation's note lets the settlement skip its messages (ms, settle.lua).
-- Returns {"fired", message, project_id, outcome, status, workflow, event,
-- generated, sim, logged} (generated and sim: the generation's room
-- messages, published again before the final one, unless the room surely
-- holds them, and then logged is "1": the final message's broadcast entry
-- is written with the outcome; see callback.lua and settle.lua),
-- {"wait", deadline} (not due yet), {"done", message, project_id, outcome,
-- status, workflow, event}
-- (settled before: its message is published again, idempotently), or
-- {"gone"}.
local v = redis.call('HMGET', KEYS[1], 'status', 'deadline', 'due_status', 'due_msg', 'project_id', 'message', 'outcome', 'workflow', 'event_name', 'sim', 'tl',
  'announced')
if not v[1] then
  return {'gone'}
end
if v[1] ~= 'ai_generated' then
  if redis.call('HEXISTS', KEYS[1], 'task') == 0 then
    return {'gone'} -- settled and compacted: nothing left to redo
  end
  return {'done', v[6] or '', v[5] or '', v[7] or '', v[1], v[8] or '', v[9] or ''}
end
if tonumber(v[2]) > tonumber(ARGV[1]) then
  return {'wait', v[2]}
end
local outcome, entry = 'timeout', ARGV[3]
if v[3] ~= 'error' then
  outcome, entry = 'simulated', ARGV[4]
end
local generated, sim, bc = settling(v[6], v[10], v[12], v[3], ARGV[5], ARGV[6], ARGV[7])
local entries, marker = settled(entry, bc, v[3])
redis.call('HSET', KEYS[1], 'status', v[3], 'message', v[4], 'outcome', outcome, 'updated_at', ARGV[2],
  'tl', tljoin(v[11], entries), unpack(marker))
return {'fired', v[4], v[5], outcome, v[3], v[8] or '', v[9] or '', generated, sim, bc ~= '' and '1' or '0'}

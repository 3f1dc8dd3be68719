-- Settle a channel whose callback deadline came: if it still awaits its
-- callback, it takes its due outcome (the timeout error, or the
-- playground's simulated callback) in the same compare-and-set a callback
-- goes through, so exactly one of them wins.
-- KEYS[1] channel hash; KEYS[2] timeline list (not written: the entry goes
-- to the record's, tl.lua).
-- ARGV[1] now (unix ms); ARGV[2] now (RFC 3339); ARGV[3] timeline entry of
-- a timeout; ARGV[4] timeline entry of a simulated callback; ARGV[5],
-- ARGV[6] the "broadcast" timeline entries of an error and of a completed
-- final message (written with the outcome, as callback.lua does).
-- Returns {"fired", message, project_id, outcome, status, workflow, event,
-- generated, sim} (generated and sim: the generation's room messages,
-- published again before the final one, see callback.lua; both empty once
-- the generation noted them published),
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
local broadcast = ARGV[6]
if v[3] == 'error' then
  broadcast = ARGV[5]
end
redis.call('HSET', KEYS[1], 'status', v[3], 'message', v[4], 'outcome', outcome, 'updated_at', ARGV[2],
  'tl', tljoin(v[11], {entry, broadcast}), 'bc:' .. v[3], 1)
local generated, sim = v[6] or '', v[10] or ''
if v[12] == '1' then
  generated, sim = '', ''
end
return {'fired', v[4], v[5], outcome, v[3], v[8] or '', v[9] or '', generated, sim}

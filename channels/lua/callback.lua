-- Accept a backend's callback: the compare-and-set that a callback and the
-- channel's deadline race through, so exactly one outcome wins.
-- KEYS[1] channel hash; KEYS[2] timeline list (not written: the entry goes
-- to the record's, tl.lua).
-- ARGV[1] now (unix ms); ARGV[2] now (RFC 3339); ARGV[3] the callback's
-- fingerprint; ARGV[4] the status it sets (completed or error); ARGV[5]
-- the caller's project; ARGV[6], ARGV[7], ARGV[8] the head, middle and
-- tail of the message it publishes, around the parts its generation
-- stored (cb_parts: the event name, the AI's response, only in a
-- completed message, and the customer data; see channels/message.go);
-- ARGV[9] those parts, when the record has none (written by an earlier
-- version), else empty; ARGV[10] its timeline entry; ARGV[11] timeline
-- entry of a timeout; ARGV[12] timeline entry of a simulated callback;
-- ARGV[13], ARGV[14] the "broadcast" timeline entries of an error and of a
-- completed final message (empty on a node without rooms); ARGV[15] how
-- long the generation's note lets the settlement skip its messages (ms,
-- settle.lua). With a publisher that lets it (ScriptPublisher): KEYS[3]
-- (and KEYS[4]) and ARGV[16..20], the keys and arguments of hub_publish
-- (hub.PublishFunc) for the final message, which it then publishes itself
-- when this callback settles the channel and the room surely holds the
-- generation's messages (logged).
-- Returns {"gone"}; {"foreign"} (another project's channel); else the
-- verdict, the channel's workflow and event name, then: {"ok", ..,
-- message, generated, sim, logged, published} (published "1": the final
-- message was published here); {"repeat", .., message, status,
-- compacted} (the same callback again); {"late", .., outcome, message,
-- status, generated, sim, logged} (the deadline had passed: it is fired
-- now); {"read", .., task, result} (no parts stored: the caller builds
-- them from the stored task and generation, and calls again with them); {"timeout", ..}; {"conflict", .., status} (settled by
-- another callback or a simulation); {"not_awaiting", .., status}.
-- generated and sim are the room messages of the generation, which the
-- winner publishes again before the final one (the room drops them if it
-- has them), so that the room's order holds even when the callback
-- overtook the generation's own publish; both empty while the room surely
-- holds them, and then the outcome writes the final message's broadcast
-- entry with itself, once, and logged is "1" (settle.lua).
local v = redis.call('HMGET', KEYS[1], 'status', 'deadline', 'due_status', 'due_msg', 'cb_fp', 'outcome', 'message', 'sim', 'tl',
  'announced', 'project_id', 'workflow', 'event_name', 'cb_parts')
local st = v[1]
if not st then
  return {'gone'}
end
if v[11] ~= ARGV[5] then
  return {'foreign'}
end
local wf, ev = v[12] or '', v[13] or ''
if st == 'ai_generated' then
  if tonumber(v[2]) <= tonumber(ARGV[1]) then
    local outcome, entry = 'timeout', ARGV[11]
    if v[3] ~= 'error' then
      outcome, entry = 'simulated', ARGV[12]
    end
    local generated, sim, bc = settling(v[7], v[8], v[10], v[3], ARGV[13], ARGV[14], ARGV[15])
    local entries, marker = settled(entry, bc, v[3])
    redis.call('HSET', KEYS[1], 'status', v[3], 'message', v[4], 'outcome', outcome, 'updated_at', ARGV[2],
      'tl', tljoin(v[9], entries), unpack(marker))
    return {'late', wf, ev, outcome, v[4], v[3], generated, sim, bc ~= '' and '1' or '0'}
  end
  local parts = v[14] or ARGV[9]
  if parts == '' then
    local t = redis.call('HMGET', KEYS[1], 'task', 'result')
    return {'read', wf, ev, t[1] or '', t[2] or ''}
  end
  local a = string.find(parts, '\n', 1, true)
  local b = string.find(parts, '\n', a + 1, true)
  local msg = ARGV[6] .. string.sub(parts, 1, a - 1) .. ARGV[7]
  if ARGV[4] == 'completed' then
    msg = msg .. string.sub(parts, a + 1, b - 1) .. ','
  end
  msg = msg .. string.sub(parts, b + 1) .. ARGV[8]
  local generated, sim, bc = settling(v[7], v[8], v[10], ARGV[4], ARGV[13], ARGV[14], ARGV[15])
  local entries, marker = settled(ARGV[10], bc, ARGV[4])
  redis.call('HSET', KEYS[1], 'status', ARGV[4], 'message', msg, 'outcome', 'callback', 'cb_fp', ARGV[3], 'updated_at', ARGV[2],
    'tl', tljoin(v[9], entries), unpack(marker))
  local published = '0'
  if bc ~= '' and ARGV[16] then
    hub_publish({KEYS[3], KEYS[4]}, {msg, ARGV[16], ARGV[17], ARGV[18], ARGV[19], ARGV[20]})
    published = '1'
  end
  return {'ok', wf, ev, msg, generated, sim, bc ~= '' and '1' or '0', published}
end
if v[6] == 'callback' then
  if v[5] == ARGV[3] then
    -- settled: "1" once its record was compacted (nothing left to redo)
    return {'repeat', wf, ev, v[7] or '', st, tostring(redis.call('HEXISTS', KEYS[1], 'task') == 0 and 1 or 0)}
  end
  return {'conflict', wf, ev, st}
end
if v[6] == 'timeout' then
  return {'timeout', wf, ev}
end
if v[6] == 'simulated' then
  return {'conflict', wf, ev, st}
end
return {'not_awaiting', wf, ev, st}

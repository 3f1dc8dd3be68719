-- Accept a backend's callback: the compare-and-set that a callback and the
-- channel's deadline race through, so exactly one outcome wins.
-- KEYS[1] channel hash; KEYS[2] timeline list (not written: the entry goes
-- to the record's, tl.lua).
-- ARGV[1] now (unix ms); ARGV[2] now (RFC 3339); ARGV[3] the callback's
-- fingerprint; ARGV[4] the status it sets (completed or error; empty when
-- the caller read the channel before it awaited a callback); ARGV[5] the
-- message it publishes; ARGV[6] its timeline entry; ARGV[7] timeline entry
-- of a timeout; ARGV[8] timeline entry of a simulated callback; ARGV[9],
-- ARGV[10] the "broadcast" timeline entries of an error and of a completed
-- final message (empty on a node without rooms); ARGV[11] how long the
-- generation's note lets the settlement skip its messages (ms, settle.lua).
-- Returns {"ok", message, generated, sim, logged}; {"repeat", message,
-- status} (the same callback again); {"late", outcome, message, status,
-- generated, sim, logged} (the deadline had passed: it is fired now);
-- {"retry"} (the channel
-- began to await its callback after the caller read it); {"timeout"};
-- {"conflict", status} (settled by another callback or a simulation);
-- {"not_awaiting", status}; or {"gone"}. generated and sim are the room
-- messages of the generation, which the winner publishes again before the
-- final one (the room drops them if it has them), so that the room's order
-- holds even when the callback overtook the generation's own publish; both
-- empty while the room surely holds them, and then the outcome writes the
-- final message's broadcast entry with itself, once, and logged is "1"
-- (settle.lua).
local v = redis.call('HMGET', KEYS[1], 'status', 'deadline', 'due_status', 'due_msg', 'cb_fp', 'outcome', 'message', 'sim', 'tl',
  'announced')
local st = v[1]
if not st then
  return {'gone'}
end
if st == 'ai_generated' then
  if tonumber(v[2]) <= tonumber(ARGV[1]) then
    local outcome, entry = 'timeout', ARGV[7]
    if v[3] ~= 'error' then
      outcome, entry = 'simulated', ARGV[8]
    end
    local generated, sim, bc = settling(v[7], v[8], v[10], v[3], ARGV[9], ARGV[10], ARGV[11])
    local entries, marker = settled(entry, bc, v[3])
    redis.call('HSET', KEYS[1], 'status', v[3], 'message', v[4], 'outcome', outcome, 'updated_at', ARGV[2],
      'tl', tljoin(v[9], entries), unpack(marker))
    return {'late', outcome, v[4], v[3], generated, sim, bc ~= '' and '1' or '0'}
  end
  if ARGV[4] == '' then
    return {'retry'}
  end
  local generated, sim, bc = settling(v[7], v[8], v[10], ARGV[4], ARGV[9], ARGV[10], ARGV[11])
  local entries, marker = settled(ARGV[6], bc, ARGV[4])
  redis.call('HSET', KEYS[1], 'status', ARGV[4], 'message', ARGV[5], 'outcome', 'callback', 'cb_fp', ARGV[3], 'updated_at', ARGV[2],
    'tl', tljoin(v[9], entries), unpack(marker))
  return {'ok', ARGV[5], generated, sim, bc ~= '' and '1' or '0'}
end
if v[6] == 'callback' then
  if v[5] == ARGV[3] then
    -- settled: "1" once its record was compacted (nothing left to redo)
    return {'repeat', v[7] or '', st, tostring(redis.call('HEXISTS', KEYS[1], 'task') == 0 and 1 or 0)}
  end
  return {'conflict', st}
end
if v[6] == 'timeout' then
  return {'timeout'}
end
if v[6] == 'simulated' then
  return {'conflict', st}
end
return {'not_awaiting', st}

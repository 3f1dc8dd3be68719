-- Record a task's outcome, once: the first completion wins, later ones (a
-- run that lost its lease but kept going) learn the winning outcome.
-- KEYS[1] channel hash; KEYS[2] timeline list (not written: the entries
-- go to the record's, tl.lua).
-- ARGV[1] status; ARGV[2] result; ARGV[3] message; ARGV[4] now;
-- ARGV[5] n, the number of extra field/value pairs that follow (an
-- event-driven channel's webhook body and deadline); then the pairs; the
-- rest: timeline entries.
-- Returns {1, outcome...} for the winner, {0, outcome...} otherwise, {-1} if
-- gone; outcome is status, message, hook, deadline, sim, beyond (see
-- start.lua).
local v = redis.call('HMGET', KEYS[1], 'status', 'message', 'hook', 'deadline', 'sim', 'outcome', 'tl')
if not v[1] then
  return {-1}
end
if v[1] ~= 'pending' and v[1] ~= 'generating' then
  -- Settled and compacted (no task): its side effects were done; beyond
  -- says so, and the caller redoes none of them.
  local beyond = v[6] or ''
  if beyond == '' and redis.call('HEXISTS', KEYS[1], 'task') == 0 then
    beyond = 'compacted'
  end
  return {0, v[1], v[2] or '', v[3] or '', v[4] or '', v[5] or '', beyond}
end
-- One HSET: the outcome, then the extra pairs (which may set hook,
-- deadline, sim or outcome: the reply reports what was written).
local n = tonumber(ARGV[5])
local out = {status = ARGV[1], message = ARGV[3], hook = v[3] or '', deadline = v[4] or '', sim = v[5] or '', outcome = v[6] or ''}
local fields = {'status', ARGV[1], 'result', ARGV[2], 'message', ARGV[3], 'updated_at', ARGV[4]}
for i = 6, 5 + 2 * n, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
  if out[ARGV[i]] ~= nil then
    out[ARGV[i]] = ARGV[i + 1]
  end
end
if #ARGV >= 6 + 2 * n then
  fields[#fields + 1] = 'tl'
  fields[#fields + 1] = tljoin(v[7], {unpack(ARGV, 6 + 2 * n)})
end
redis.call('HSET', KEYS[1], unpack(fields))
return {1, out.status, out.message, out.hook, out.deadline, out.sim, out.outcome}

-- Record a task's outcome, once: the first completion wins, later ones (a
-- run that lost its lease but kept going) learn the winning outcome.
-- KEYS[1] channel hash; KEYS[2] timeline list.
-- ARGV[1] status; ARGV[2] result; ARGV[3] message; ARGV[4] now;
-- ARGV[5] n, the number of extra field/value pairs that follow (an
-- event-driven channel's webhook body and deadline); then the pairs; the
-- rest: timeline entries.
-- Returns {1, outcome...} for the winner, {0, outcome...} otherwise, {-1} if
-- gone; outcome is status, message, hook, deadline, sim, beyond (see
-- start.lua).
local function outcome(won)
  local v = redis.call('HMGET', KEYS[1], 'status', 'message', 'hook', 'deadline', 'sim', 'outcome')
  return {won, v[1], v[2] or '', v[3] or '', v[4] or '', v[5] or '', v[6] or ''}
end
local st = redis.call('HGET', KEYS[1], 'status')
if not st then
  return {-1}
end
if st ~= 'pending' and st ~= 'generating' then
  return outcome(0)
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'result', ARGV[2], 'message', ARGV[3], 'updated_at', ARGV[4])
local n = tonumber(ARGV[5])
if n > 0 then
  local fields = {}
  for i = 6, 5 + 2 * n do
    fields[#fields + 1] = ARGV[i]
  end
  redis.call('HSET', KEYS[1], unpack(fields))
end
for i = 6 + 2 * n, #ARGV do
  redis.call('RPUSH', KEYS[2], ARGV[i])
end
return outcome(1)

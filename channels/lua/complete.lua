-- Record a task's outcome, once: the first completion wins, later ones (a
-- run that lost its lease but kept going) learn the winning message.
-- KEYS[1] channel hash; KEYS[2] timeline list.
-- ARGV[1] status; ARGV[2] result; ARGV[3] message; ARGV[4] now;
-- ARGV[5..] timeline entries.
-- Returns {1, message} for the winner, {0, message} otherwise, {-1} if gone.
local v = redis.call('HMGET', KEYS[1], 'status', 'message')
local st = v[1]
if not st then
  return {-1}
end
if st ~= 'pending' and st ~= 'generating' then
  return {0, v[2] or ''}
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'result', ARGV[2], 'message', ARGV[3], 'updated_at', ARGV[4])
for i = 5, #ARGV do
  redis.call('RPUSH', KEYS[2], ARGV[i])
end
return {1, ARGV[3]}

-- Begin running a claimed task.
-- KEYS[1] channel hash; KEYS[2] timeline list.
-- ARGV[1] now (RFC 3339); ARGV[2] timeline entry for a first start;
-- ARGV[3] timeline entry for a restart after a lost lease.
-- Returns {"run", task, project_id, runs} when the task must run (runs
-- counts the runs begun, this one included),
-- {"done", task, project_id, status, message, hook, deadline, sim, beyond}
-- when it already finished (its side effects may not have happened: the
-- caller redoes them, they are idempotent; beyond is set once a callback or
-- the deadline has settled an event-driven channel, whose generation's side
-- effects are then moot), or {"gone"} when the channel expired.
local v = redis.call('HMGET', KEYS[1], 'status', 'task', 'project_id', 'message', 'hook', 'deadline', 'sim', 'outcome', 'runs')
local st = v[1]
if not st then
  return {'gone'}
end
if st == 'pending' or st == 'generating' then
  local runs = tostring((tonumber(v[9]) or 0) + 1)
  if st == 'pending' then
    redis.call('HSET', KEYS[1], 'status', 'generating', 'updated_at', ARGV[1], 'runs', runs)
    redis.call('RPUSH', KEYS[2], ARGV[2])
  else
    redis.call('HSET', KEYS[1], 'runs', runs)
    redis.call('RPUSH', KEYS[2], ARGV[3])
  end
  return {'run', v[2], v[3], runs}
end
return {'done', v[2], v[3], st, v[4] or '', v[5] or '', v[6] or '', v[7] or '', v[8] or ''}

-- Begin running a claimed task.
-- ch channel hash; tl timeline list (not written: the entry goes to the
-- record's, tl.lua).
-- now (RFC 3339); entry: timeline entry for a first start;
-- restart: timeline entry for a restart after a lost lease; again: the
-- claim that leased the task is being answered again (claimstart.lua), so
-- a task it started is reported, not started twice.
-- Returns {"run", task, project_id, runs} when the task must run (runs
-- counts the runs begun, this one included),
-- {"done", task, project_id, status, message, hook, deadline, sim, beyond}
-- when it already finished (its side effects may not have happened: the
-- caller redoes them, they are idempotent; beyond is set once a callback or
-- the deadline has settled an event-driven channel, whose generation's side
-- effects are then moot), or {"gone"} when the channel expired. A settled
-- channel whose record was compacted has no task: "done" with task "".
local function start(ch, tl, now, entry, restart, again)
  local v = redis.call('HMGET', ch, 'status', 'task', 'project_id', 'message', 'hook', 'deadline', 'sim', 'outcome', 'runs', 'tl')
  local st = v[1]
  if not st then
    return {'gone'}
  end
  if again and st == 'generating' then
    return {'run', v[2] or '', v[3], tostring(tonumber(v[9]) or 1)}
  end
  if st == 'pending' or st == 'generating' then
    local runs = tostring((tonumber(v[9]) or 0) + 1)
    if st == 'pending' then
      redis.call('HSET', ch, 'status', 'generating', 'updated_at', now, 'runs', runs, 'tl', tljoin(v[10], {entry}))
    else
      redis.call('HSET', ch, 'runs', runs, 'tl', tljoin(v[10], {restart}))
    end
    return {'run', v[2] or '', v[3], runs}
  end
  return {'done', v[2] or '', v[3], st, v[4] or '', v[5] or '', v[6] or '', v[7] or '', v[8] or ''}
end

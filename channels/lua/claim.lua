-- Claim up to A[1] tasks round robin across projects: take one task
-- from the ring's head project, move that project to the ring's tail if it
-- has more, repeat. When a single project is on the ring, take the rest of
-- the batch from it at once. Each task moves into the lease set, leased
-- until A[2] (unix ms), in this one script, so it is never in neither
-- place. Its lease member is "<pid>/<cid>"; a task of the legacy ready list
-- (ring entry A[3]) keeps the member it was queued as.
-- K[1] ring; K[2] lease zset; K[3] ready counter; K[4] legacy
-- ready list; K[5] the prefix of the project queues' keys (a key of
-- this script's slot: the queues are P:{tasks}:q:<pid>).
-- K[6] this claim's key: the members it claimed are kept there for
-- A[4] ms, so that the same claim sent again (its answer was lost when
-- Redis stopped, or the client resent it) returns them rather than
-- leaving them leased by nobody and claiming others.
-- Returns the lease members claimed, and whether they are a claim's
-- answered again.
local function claim(K, A)
  local again = redis.call('LRANGE', K[6], 0, -1)
  if #again > 0 then
    local out = {}
    for _, m in ipairs(again) do
      if redis.call('ZSCORE', K[2], m) then
        out[#out + 1] = m
      end
    end
    return out, true
  end
  local max = tonumber(A[1])
  local out, lease, counted = {}, {}, 0
  local function take(pid, id)
    local m = id
    if pid ~= A[3] then
      m = pid .. '/' .. id
      counted = counted + 1
    end
    out[#out + 1] = m
    lease[#lease + 1] = A[2]
    lease[#lease + 1] = m
  end
  while #out < max do
    local pid = redis.call('LPOP', K[1])
    if not pid then
      break
    end
    local q = K[5] .. pid
    if pid == A[3] then
      q = K[4]
    end
    local want = 1
    if redis.call('LLEN', K[1]) == 0 then
      want = max - #out -- alone on the ring: no one to take turns with
    end
    local ids = redis.call('LPOP', q, want)
    if ids then
      for _, id in ipairs(ids) do
        take(pid, id)
      end
      if redis.call('LLEN', q) > 0 then
        redis.call('RPUSH', K[1], pid)
      end
    end
  end
  if #out > 0 then
    redis.call('ZADD', K[2], unpack(lease))
    redis.call('RPUSH', K[6], unpack(out))
    redis.call('PEXPIRE', K[6], A[4])
  end
  if counted > 0 then
    redis.call('DECRBY', K[3], counted)
  end
  return out, false
end

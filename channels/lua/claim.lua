-- Claim up to ARGV[1] tasks round robin across projects: take one task
-- from the ring's head project, move that project to the ring's tail if it
-- has more, repeat. When a single project is on the ring, take the rest of
-- the batch from it at once. Each task moves into the lease set, leased
-- until ARGV[2] (unix ms), in this one script, so it is never in neither
-- place. Its lease member is "<pid>/<cid>"; a task of the legacy ready list
-- (ring entry ARGV[3]) keeps the member it was queued as.
-- KEYS[1] ring; KEYS[2] lease zset; KEYS[3] ready counter; KEYS[4] legacy
-- ready list; KEYS[5] the prefix of the project queues' keys (a key of
-- this script's slot: the queues are P:{tasks}:q:<pid>).
-- KEYS[6] this claim's key: the members it claimed are kept there for
-- ARGV[4] ms, so that the same claim sent again (its answer was lost when
-- Redis stopped, or the client resent it) returns them rather than
-- leaving them leased by nobody and claiming others.
-- Returns the lease members claimed.
local again = redis.call('LRANGE', KEYS[6], 0, -1)
if #again > 0 then
  local out = {}
  for _, m in ipairs(again) do
    if redis.call('ZSCORE', KEYS[2], m) then
      out[#out + 1] = m
    end
  end
  return out
end
local max = tonumber(ARGV[1])
local out, lease, counted = {}, {}, 0
local function take(pid, id)
  local m = id
  if pid ~= ARGV[3] then
    m = pid .. '/' .. id
    counted = counted + 1
  end
  out[#out + 1] = m
  lease[#lease + 1] = ARGV[2]
  lease[#lease + 1] = m
end
while #out < max do
  local pid = redis.call('LPOP', KEYS[1])
  if not pid then
    break
  end
  local q = KEYS[5] .. pid
  if pid == ARGV[3] then
    q = KEYS[4]
  end
  local want = 1
  if redis.call('LLEN', KEYS[1]) == 0 then
    want = max - #out -- alone on the ring: no one to take turns with
  end
  local ids = redis.call('LPOP', q, want)
  if ids then
    for _, id in ipairs(ids) do
      take(pid, id)
    end
    if redis.call('LLEN', q) > 0 then
      redis.call('RPUSH', KEYS[1], pid)
    end
  end
end
if #out > 0 then
  redis.call('ZADD', KEYS[2], unpack(lease))
  redis.call('RPUSH', KEYS[6], unpack(out))
  redis.call('PEXPIRE', KEYS[6], ARGV[4])
end
if counted > 0 then
  redis.call('DECRBY', KEYS[3], counted)
end
return out

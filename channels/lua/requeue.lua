-- The prelude of the scripts that give leased tasks back (reclaim,
-- release). KEYS[2] ring; KEYS[3] ready counter; KEYS[4] legacy ready list;
-- KEYS[5] project queues' key prefix; ARGV[1] the legacy ring entry.
-- requeue puts a lease member back at the head of its project's queue
-- (and the project on the ring if its queue was empty); a bare channel id
-- (leased by a node of the single-queue layout) goes back to the legacy
-- list.
local legacy = false
local function requeue(m)
  local pid, cid = string.match(m, '^(.*)/([^/]+)$')
  if not pid then
    redis.call('LPUSH', KEYS[4], m)
    legacy = true
    return
  end
  if redis.call('LPUSH', KEYS[5] .. pid, cid) == 1 then
    redis.call('RPUSH', KEYS[2], pid)
  end
  redis.call('INCR', KEYS[3])
end
-- adopt puts the legacy list on the ring if it has tasks and is not on it
-- (nodes of the single-queue layout push there without the ring).
local function adopt()
  if redis.call('LLEN', KEYS[4]) > 0 and not redis.call('LPOS', KEYS[2], ARGV[1]) then
    redis.call('RPUSH', KEYS[2], ARGV[1])
  end
end

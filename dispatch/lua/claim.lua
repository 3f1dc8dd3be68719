-- Claim up to ARGV[2] deliveries due at ARGV[1] (unix ms), fairly across
-- projects: move them from their project's due set to the lease set
-- (leased until ARGV[3]) and stamp each with the claim token ARGV[4], so
-- only this claim may record the attempt.
-- KEYS[1] projects zset (project → earliest due time of its due set, a
-- lower bound); KEYS[2] lease zset; KEYS[3] unhealthy endpoints hash;
-- KEYS[4] endpoint wake-up zset (endpoint id → when its waiting
-- deliveries need attention). ARGV[5] delivery hash key prefix; ARGV[6]
-- TTL (seconds) of a delivery that ends here, cancelled; ARGV[7] endpoint
-- health key prefix (an endpoint's waiting set is that key + ":wait");
-- ARGV[8] due zset key prefix (+ project id); ARGV[9] k, then k projects
-- not to claim for (they hold their share of the claiming node's slots),
-- then pairs of an endpoint the claiming node is busy with (as many
-- attempts as it allows in flight, and as many waiting) and how long (ms)
-- its deliveries are put off, unclaimed (their bodies not returned).
--
-- Fairness: the projects with something due are served round robin, an
-- equal quota of the batch each per round, so a project's backlog does
-- not stand before another project's deliveries.
--
-- Endpoint circuits (see record.lua): a delivery whose endpoint is open
-- (or probing) is not claimed. It moves from the due set to the
-- endpoint's waiting set, keeping its due time, without an attempt, and is
-- reported once per opening (epoch) so its channel's timeline says why.
-- Waiting deliveries cost nothing until the endpoint's wake-up time:
-- then, if the circuit is still open, one of them goes back to the due set
-- and is claimed as the probe; if it closed, they all go back (500 per
-- claim).
--
-- Returns {deliveries, earliest due or "", paused, projects with
-- something due, put off {id, endpoint id, project id, due}, those
-- projects' ids}; each delivery is {id, project_id, webhook_id,
-- channel_id, event, body, attempts, tries, resumed}, resumed being
-- "probe" (it tests an open endpoint), "closed" (it waited for an
-- endpoint that recovered) or ""; each paused one is {id, channel_id,
-- webhook_id, event, until, reason}. A delivery whose retries were
-- cancelled is not claimed (see cancel.lua).
--
-- KEYS[5] is this claim's key: the ids it claimed are kept there for a
-- lease, so that the same claim sent again (its answer was lost when
-- Redis stopped, or the client resent it) returns them, still claimed by
-- it, rather than leaving them leased by nobody until the lease runs out.
local again = redis.call('LRANGE', KEYS[5], 0, -1)
if #again > 0 then
  local out = {}
  for _, id in ipairs(again) do
    local v = redis.call('HMGET', ARGV[5] .. id, 'project_id', 'webhook_id', 'channel_id', 'event', 'attempts', 'tries', 'claim', 'body', 'status')
    if v[7] == ARGV[4] and v[9] == 'delivering' then
      out[#out + 1] = {id, v[1], v[2], v[3], v[4], v[8], v[5] or '0', v[6] or '0', ''}
    end
  end
  return {out, '', {}, 0, {}, {}}
end
local now = tonumber(ARGV[1])
local eps = {}
local function health(whid)
  local h = eps[whid]
  if not h then
    local v = redis.call('HMGET', ARGV[7] .. whid, 'state', 'open_until', 'probe_until', 'epoch', 'reason', 'project_id')
    h = {state = v[1] or 'closed', open_until = tonumber(v[2] or '0') or 0,
         probe_until = tonumber(v[3] or '0') or 0, epoch = v[4] or '0', reason = v[5] or '', pid = v[6]}
    eps[whid] = h
  end
  return h
end

-- the lower bound of a project's earliest due time, corrected
local function rescore(pid)
  local f = redis.call('ZRANGE', ARGV[8] .. pid, 0, 0, 'WITHSCORES')
  if f[2] then
    redis.call('ZADD', KEYS[1], f[2], pid)
  else
    redis.call('ZREM', KEYS[1], pid)
  end
end

-- Endpoints whose waiting deliveries need attention.
local wake = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[1], 'LIMIT', 0, 64)
for _, whid in ipairs(wake) do
  local h = health(whid)
  local wait = ARGV[7] .. whid .. ':wait'
  local n = 1 -- open or probing, and due: release the probe
  if h.state == 'closed' then
    n = 500
  elseif (h.state == 'open' and now < h.open_until) or (h.state == 'probing' and now < h.probe_until) then
    n = 0 -- not yet (the wake-up time was moved meanwhile)
    redis.call('ZADD', KEYS[4], h.state == 'open' and h.open_until or h.probe_until, whid)
  end
  if n > 0 then
    local moved = redis.call('ZRANGE', wait, 0, n - 1, 'WITHSCORES')
    for i = 1, #moved, 2 do
      -- each delivery names its project (the endpoint's record may have
      -- expired meanwhile)
      local pid = redis.call('HGET', ARGV[5] .. moved[i], 'project_id')
      if pid then
        redis.call('ZADD', ARGV[8] .. pid, moved[i + 1], moved[i])
        redis.call('ZADD', KEYS[1], 'LT', moved[i + 1], pid)
      end
    end
    if #moved > 0 then
      redis.call('ZREMRANGEBYRANK', wait, 0, #moved / 2 - 1)
    end
    if redis.call('EXISTS', wait) == 0 then
      redis.call('ZREM', KEYS[4], whid)
    elseif h.state == 'closed' then
      redis.call('ZADD', KEYS[4], now, whid)
    else
      -- the released probe may not be claimed (its project skipped, or
      -- it is cancelled): release another one lease later
      redis.call('ZADD', KEYS[4], ARGV[3], whid)
    end
  end
end

local out, paused, held = {}, {}, {}
local skip, busy = {}, {}
-- take one due delivery: claim it, pause it, or end it (cancelled)
local function take(id, due, dk)
  local key = ARGV[5] .. id
  local v = redis.call('HMGET', key, 'project_id', 'webhook_id', 'channel_id', 'event', 'attempts', 'tries', 'cancel', 'paused', 'body')
  redis.call('ZREM', dk, id)
  if v[7] and v[7] ~= '' then
    -- cancelled while an attempt was under way, whose node then died
    redis.call('HSET', key, 'status', 'cancelled', 'claim', '', 'next_at', '')
    redis.call('EXPIRE', key, ARGV[6])
    redis.call('EXPIRE', key .. ':att', ARGV[6])
    return
  end
  if not v[1] then
    return
  end
  if busy[v[2]] then
    -- the claiming node has no room for this endpoint: later, unclaimed
    redis.call('ZADD', dk, now + busy[v[2]], id)
    held[#held + 1] = {id, v[2], v[1], now + busy[v[2]]}
    return
  end
  local h = health(v[2])
  local wait, probe = nil, false
  if h.state == 'open' then
    if now >= h.open_until then probe = true else wait = h.open_until end
  elseif h.state == 'probing' then
    if now >= h.probe_until then probe = true else wait = h.probe_until end
  end
  if wait then
    if not h.pid then
      redis.call('HSET', ARGV[7] .. v[2], 'project_id', v[1])
      h.pid = v[1]
    end
    redis.call('ZADD', ARGV[7] .. v[2] .. ':wait', due, id)
    redis.call('EXPIRE', ARGV[7] .. v[2], ARGV[6] * 5)
    redis.call('ZADD', KEYS[4], 'NX', wait, v[2])
    redis.call('HSET', key, 'next_at', wait)
    if v[8] ~= h.epoch then
      redis.call('HSET', key, 'paused', h.epoch)
      paused[#paused + 1] = {id, v[3], v[2], v[4], tostring(wait), h.reason}
    end
    return
  end
  local resumed = ''
  if probe then
    redis.call('HSET', ARGV[7] .. v[2], 'state', 'probing', 'probe', id, 'probe_until', ARGV[3], 'project_id', v[1])
    redis.call('HSET', KEYS[3], v[2], 'probing')
    redis.call('ZADD', KEYS[4], ARGV[3], v[2])
    h.state, h.probe_until, h.pid = 'probing', tonumber(ARGV[3]), v[1]
    resumed = 'probe'
  elseif v[8] and v[8] ~= '' then
    resumed = 'closed'
  end
  if v[8] and v[8] ~= '' then
    redis.call('HDEL', key, 'paused')
  end
  redis.call('ZADD', KEYS[2], ARGV[3], id)
  redis.call('HSET', key, 'status', 'delivering', 'claim', ARGV[4])
  out[#out + 1] = {id, v[1], v[2], v[3], v[4], v[9], v[5] or '0', v[6] or '0', resumed}
end

local nskip = tonumber(ARGV[9])
for i = 10, 9 + nskip do
  skip[ARGV[i]] = true
end
for i = 10 + nskip, #ARGV, 2 do
  busy[ARGV[i]] = tonumber(ARGV[i + 1])
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100 + nskip)
local active = {}
for _, pid in ipairs(due) do
  if not skip[pid] then
    active[#active + 1] = pid
  end
end
local n = tonumber(ARGV[2])
local rounds = 0
while #out < n and #held < 2 * n and #active > 0 and rounds < 64 do
  rounds = rounds + 1
  local quota = math.max(1, math.floor((n - #out) / #active))
  local still = {}
  for _, pid in ipairs(active) do
    if #out >= n then
      break
    end
    local dk = ARGV[8] .. pid
    local rows = redis.call('ZRANGEBYSCORE', dk, '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, quota)
    for i = 1, #rows, 2 do
      take(rows[i], rows[i + 1], dk)
    end
    if #rows / 2 < quota then
      rescore(pid) -- nothing more due now
    else
      still[#still + 1] = pid
    end
  end
  active = still
end
if #out > 0 then
  local ids = {}
  for i, row in ipairs(out) do
    ids[i] = row[1]
  end
  redis.call('RPUSH', KEYS[5], unpack(ids))
  redis.call('PEXPIRE', KEYS[5], tonumber(ARGV[3]) - now)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wk = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
local next_at = nxt[2]
if wk[2] and (not next_at or tonumber(wk[2]) < tonumber(next_at)) then
  next_at = wk[2]
end
return {out, next_at or '', paused, #due, held, due}

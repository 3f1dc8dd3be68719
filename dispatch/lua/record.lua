-- Record an attempt's outcome, if the claim is still ours (a delivery
-- reclaimed after its lease ran out belongs to the newer claim).
-- KEYS[1] delivery hash; KEYS[2] attempts list; KEYS[3] due zset;
-- KEYS[4] lease zset; KEYS[5] project DLQ zset; KEYS[6] endpoint DLQ zset.
-- ARGV[1] id; ARGV[2] claim token; ARGV[3] outcome: ok | retry | dead;
-- ARGV[4] now (unix ms); ARGV[5] attempt JSON; ARGV[6] next due (unix ms,
-- retry); ARGV[7] TTL seconds once final; ARGV[8] last status code;
-- ARGV[9] last error; ARGV[10] now (RFC 3339).
-- A retry or dead letter of a delivery whose retries were cancelled ends it
-- as cancelled instead (see cancel.lua).
--
-- The attempt also updates its endpoint's health (KEYS[7], the endpoint's
-- health hash; KEYS[8], the hash of endpoints that are not healthy), even
-- under a stale claim (the attempt was made); KEYS[9] is the endpoint
-- wake-up zset (see claim.lua): ARGV[11] "1" succeeded, "0"
-- failed, "" no attempt reached the endpoint; ARGV[12] consecutive failures
-- that open the circuit; ARGV[13] first open period (ms); ARGV[14] longest
-- open period (ms); ARGV[15] the receiver's Retry-After (ms, 0 none);
-- ARGV[16] failing this long (ms) disables the endpoint (0 never);
-- ARGV[17] project id; ARGV[18] health TTL (seconds); ARGV[19] endpoint id.
-- KEYS[3] is the project's due zset, KEYS[10] the projects zset.
--
-- The attempt is counted in the minute's statistics, KEYS[11] (see
-- stats.go), under a stale claim too, in one field: its outcome (a dead
-- letter recorded as cancelled counts as a failed attempt), ':' and its
-- duration bucket, ARGV[20]; ARGV[21] is the hash's TTL (seconds).
--
-- The same attempt recorded again (its batch sent again after a round trip
-- that failed part-way) changes and counts nothing, and answers what it
-- answered the first time (the field rec of the delivery hash,
-- "<recorded>:<change>"). A stale claim's record leaves a marker for that,
-- KEYS[12] (the claim's own key, kept an hour).
--
-- Returns {recorded, change}: recorded is 1 when recorded as asked, 2 when
-- recorded as cancelled instead, 0 when the claim was stale; change is
-- "opened", "reopened", "closed", "disable" or "".
local d = redis.call('HMGET', KEYS[1], 'claim', 'attempts', 'tries', 'cancel')
local claim = d[1]
if claim ~= ARGV[2] then
  if redis.call('LINDEX', KEYS[2], -1) == ARGV[5] then
    local rec = redis.call('HGET', KEYS[1], 'rec') or ''
    local code, change = string.match(rec, '^(%d):(.*)$')
    if code then
      return {tonumber(code), change}
    end
    return {1, ''} -- recorded by an earlier version
  end
  if not redis.call('SET', KEYS[12], 1, 'NX', 'EX', 3600) then
    return {0, ''}
  end
end
local function count(outcome)
  if redis.call('HINCRBY', KEYS[11], outcome .. ':' .. ARGV[20], 1) == 1 then
    redis.call('EXPIRE', KEYS[11], ARGV[21])
  end
end
local change = ''
if ARGV[11] ~= '' then
  local ep, bad = KEYS[7], KEYS[8]
  local whid = ARGV[19]
  local now = tonumber(ARGV[4])
  local v = redis.call('HMGET', ep, 'state', 'fails', 'failing_since', 'cooldown', 'probe', 'recent', 'open_until', 'last_at')
  local state = v[1] or 'closed'
  local recent = (v[6] or '') .. ARGV[11]
  if #recent > 50 then
    recent = string.sub(recent, -50)
  end
  if ARGV[11] == '1' and state == 'closed' and (v[2] or '0') == '0' then
    -- Healthy and staying so, the common case: written only while the
    -- window of recent outcomes still changes, and last_at once a second.
    local old = v[6] or ''
    if #old < 50 or string.find(old, '0', 1, true) or now - tonumber(v[8] or '0') >= 1000 then
      if redis.call('HSET', ep, 'recent', recent, 'last_at', now) > 0 then
        redis.call('EXPIRE', ep, ARGV[18]) -- a new record
      end
    end
  elseif ARGV[11] == '1' then
    if state ~= 'closed' then
      change = 'closed'
      redis.call('ZADD', KEYS[9], now, whid) -- release the waiting deliveries
    end
    redis.call('HSET', ep, 'state', 'closed', 'fails', 0, 'failing_since', 0, 'cooldown', 0, 'probe', '',
      'recent', recent, 'last_at', now, 'reason', '', 'project_id', ARGV[17])
    redis.call('HDEL', bad, whid)
    redis.call('EXPIRE', ep, ARGV[18])
  else
    local fails = tonumber(v[2] or '0') + 1
    local since = tonumber(v[3] or '0')
    if since == 0 then
      since = now
    end
    redis.call('HSET', ep, 'fails', fails, 'failing_since', since, 'recent', recent, 'last_at', now,
      'last_error', ARGV[9], 'project_id', ARGV[17])
    local base, cap, asked = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])
    local cooldown, open_for, reason = 0, 0, ''
    if asked > 0 then
      if state == 'closed' or tonumber(v[7] or '0') < now + asked then
        cooldown, open_for = tonumber(v[4] or '0'), asked
        reason = 'the receiver answered ' .. ARGV[8] .. ' with Retry-After: ' .. math.floor(asked / 1000) .. ' s'
      end
    elseif state == 'probing' and v[5] == ARGV[1] then
      cooldown = math.min(math.max(base, 2 * tonumber(v[4] or '0')), cap)
      open_for = cooldown
      reason = 'the probe failed: ' .. ARGV[9]
    elseif state == 'closed' and fails >= tonumber(ARGV[12]) then
      cooldown, open_for = base, base
      reason = fails .. ' consecutive failed attempts (last: ' .. ARGV[9] .. ')'
    end
    if open_for > 0 then
      redis.call('HINCRBY', ep, 'epoch', 1)
      redis.call('HSET', ep, 'state', 'open', 'open_until', now + open_for, 'cooldown', cooldown, 'probe', '',
        'reason', reason, 'opened_at', now)
      if state == 'closed' then
        change = 'opened'
      else
        change = 'reopened'
      end
      redis.call('HSET', bad, whid, 'open')
      redis.call('ZADD', KEYS[9], now + open_for, whid)
    elseif state == 'closed' then
      redis.call('HSET', bad, whid, 'degraded')
    end
    local off = tonumber(ARGV[16])
    if off > 0 and now - since >= off then
      change = 'disable'
    end
    redis.call('EXPIRE', ep, ARGV[18])
  end
end
if claim ~= ARGV[2] then
  count(ARGV[3])
  return {0, change}
end
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('RPUSH', KEYS[2], ARGV[5])
local outcome = ARGV[3]
if outcome ~= 'ok' and d[4] and d[4] ~= '' then
  outcome = 'cancelled' -- see cancel.lua
end
-- The delivery's fields, in one HSET (the counts read above, under this
-- script): the attempt's, then the outcome's.
local set = {'claim', '', 'attempts', tonumber(d[2] or '0') + 1, 'last_status', ARGV[8], 'last_error', ARGV[9],
  'updated_at', ARGV[10]}
local function add(...)
  for i = 1, select('#', ...) do
    set[#set + 1] = select(i, ...)
  end
end
local recorded = '1:'
if outcome == 'ok' then
  add('status', 'succeeded', 'next_at', '')
else
  add('tries', tonumber(d[3] or '0') + 1)
  if outcome == 'cancelled' then
    recorded = '2:'
    add('status', 'cancelled', 'next_at', '')
  elseif outcome == 'retry' then
    add('status', 'retrying', 'next_at', ARGV[6])
    redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
    redis.call('ZADD', KEYS[10], 'LT', ARGV[6], ARGV[17])
  else
    add('status', 'dead', 'next_at', '', 'dead_at', ARGV[4])
    redis.call('ZADD', KEYS[5], ARGV[4], ARGV[1])
    redis.call('ZADD', KEYS[6], ARGV[4], ARGV[1])
  end
end
add('rec', recorded .. change)
redis.call('HSET', KEYS[1], unpack(set))
if outcome ~= 'retry' then
  redis.call('EXPIRE', KEYS[1], ARGV[7])
  redis.call('EXPIRE', KEYS[2], ARGV[7])
end
if outcome == 'cancelled' then
  if ARGV[3] == 'dead' then
    count('retry')
  else
    count(ARGV[3])
  end
  return {2, change}
end
count(ARGV[3])
return {1, change}

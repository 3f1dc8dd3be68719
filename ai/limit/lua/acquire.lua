-- Admit one request of a credential, or say how long to wait. All three
-- limits are checked before anything is recorded, so a refusal takes
-- nothing. Times are the caller's (its clock corrected to Redis time), not
-- Redis TIME, so that tests can drive them and the embedded Redis runs it.
-- KEYS[1] conc: sorted set, permit id -> expiry (unix ms);
-- KEYS[2] rpm: sorted set, permit id -> admission (unix ms), an exact log;
-- KEYS[3] tpm: hash, unix second -> tokens reported in it.
-- ARGV[1] now (unix ms); ARGV[2] concurrency, ARGV[3] RPM, ARGV[4] TPM
-- (0: no limit of that kind); ARGV[5] RPM window (ms); ARGV[6] hold (ms);
-- ARGV[7] permit id.
-- Returns 0 when admitted (the permit is in conc and rpm). Otherwise the ms
-- to wait: positive when an RPM or TPM window must move on first (nothing
-- can be admitted sooner), negative when only a concurrency slot is missing
-- (its value is the earliest expiry, but a release may free one sooner).
local now = tonumber(ARGV[1])
local conc, rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local window, hold = tonumber(ARGV[5]), tonumber(ARGV[6])
local wait = 0
-- The RPM log's time never goes backwards, even when callers' nows reach
-- Redis out of order (they are taken before the round trip): then every
-- entry that counts at the time recorded is still in the log.
local at = now
if rpm > 0 then
  local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  if last[2] and tonumber(last[2]) > at then
    at = tonumber(last[2])
  end
  -- An admission counts while its score > at - window.
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', at - window)
  local n = redis.call('ZCARD', KEYS[2])
  if n >= rpm then
    -- Once the (n-rpm+1) oldest have left, fewer than rpm count.
    local e = redis.call('ZRANGE', KEYS[2], n - rpm, n - rpm, 'WITHSCORES')
    wait = tonumber(e[2]) + window - now
  end
end
if tpm > 0 then
  -- A bucket counts while now < (second + 60) * 1000.
  local sec = math.floor(now / 1000)
  local h = redis.call('HGETALL', KEYS[3])
  local secs, tokens, sum = {}, {}, 0
  for i = 1, #h, 2 do
    local s = tonumber(h[i])
    if s <= sec - 60 then
      redis.call('HDEL', KEYS[3], h[i])
    else
      local v = tonumber(h[i + 1])
      secs[#secs + 1] = s
      tokens[s] = v
      sum = sum + v
    end
  end
  if sum >= tpm then
    table.sort(secs)
    for _, s in ipairs(secs) do
      sum = sum - tokens[s]
      if sum < tpm then
        wait = math.max(wait, (s + 60) * 1000 - now)
        break
      end
    end
  end
end
if wait > 0 then
  return wait
end
if conc > 0 then
  -- A permit whose holder died leaves at its expiry.
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= conc then
    local e = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return -math.max(1, tonumber(e[2]) - now)
  end
  redis.call('ZADD', KEYS[1], now + hold, ARGV[7])
  redis.call('PEXPIRE', KEYS[1], window + hold)
end
if rpm > 0 then
  redis.call('ZADD', KEYS[2], at, ARGV[7])
  redis.call('PEXPIRE', KEYS[2], window + hold)
end
return 0

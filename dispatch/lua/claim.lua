-- Claim up to ARGV[2] deliveries due at ARGV[1] (unix ms): move them from
-- the due set to the lease set (leased until ARGV[3]) and stamp each with
-- the claim token ARGV[4], so only this claim may record the attempt.
-- KEYS[1] due zset; KEYS[2] lease zset; ARGV[5] delivery hash key prefix;
-- ARGV[6] TTL (seconds) of a delivery that ends here, cancelled.
-- Returns {deliveries, earliest remaining due score or ""}; each delivery
-- is {id, project_id, webhook_id, channel_id, event, body, attempts, tries}.
-- A delivery whose retries were cancelled is not claimed (see cancel.lua).
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[5] .. id
  local v = redis.call('HMGET', key, 'project_id', 'webhook_id', 'channel_id', 'event', 'body', 'attempts', 'tries', 'cancel')
  if v[8] and v[8] ~= '' then
    -- cancelled while an attempt was under way, whose node then died
    redis.call('HSET', key, 'status', 'cancelled', 'claim', '', 'next_at', '')
    redis.call('EXPIRE', key, ARGV[6])
    redis.call('EXPIRE', key .. ':att', ARGV[6])
  elseif v[1] then
    redis.call('ZADD', KEYS[2], ARGV[3], id)
    redis.call('HSET', key, 'status', 'delivering', 'claim', ARGV[4])
    out[#out + 1] = {id, v[1], v[2], v[3], v[4], v[5], v[6] or '0', v[7] or '0'}
  end
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {out, nxt[2] or ''}

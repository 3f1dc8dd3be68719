-- Create a delivery unless it exists (enqueue is repeated after crashes;
-- the delivery id is derived from event, channel and endpoint).
-- KEYS[1] delivery hash; KEYS[2] the project's due zset; KEYS[3] the
-- projects zset (project → earliest due, a lower bound); KEYS[4] lease
-- zset; KEYS[5] the endpoint's health hash; KEYS[6], optional, a guard:
-- a hash whose field "message" must hold the delivery's body (the
-- record of the channel whose completion wrote it, Enqueueing.In).
-- ARGV[1] id; ARGV[2] due (unix ms); ARGV[3] project id; ARGV[4] lease end
-- (unix ms; "0": not taken); ARGV[5] claim token; ARGV[6..] field/value
-- pairs.
--
-- Taken (ARGV[4] set: the enqueueing node has room for it): unless its
-- endpoint's circuit is open or probing, the delivery is claimed at once
-- by the token, as claim.lua would, without going through the due set.
-- Returns 0 when it existed, 1 when due, 2 when taken: also when it exists
-- claimed by this very token (the same script sent again after its answer
-- was lost, a timeout); 3 when the guard kept it from being written.
if redis.call('EXISTS', KEYS[1]) == 1 then
  if ARGV[4] ~= '0' and redis.call('HGET', KEYS[1], 'claim') == ARGV[5] then
    return 2
  end
  return 0
end
if KEYS[6] then
  local body
  for i = 6, #ARGV - 1, 2 do
    if ARGV[i] == 'body' then
      body = ARGV[i + 1]
    end
  end
  if redis.call('HGET', KEYS[6], 'message') ~= body then
    return 3
  end
end
local take = false
if ARGV[4] ~= '0' then
  local state = redis.call('HGET', KEYS[5], 'state')
  take = not state or state == 'closed'
end
local fields = {}
for i = 6, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
if take then -- (a field given twice: the last value is kept)
  fields[#fields + 1] = 'status'
  fields[#fields + 1] = 'delivering'
  fields[#fields + 1] = 'claim'
  fields[#fields + 1] = ARGV[5]
end
redis.call('HSET', KEYS[1], unpack(fields))
if take then
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
  return 2
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], 'LT', ARGV[2], ARGV[3])
return 1

-- Notes that an event-driven channel's generation messages reached its
-- room (ai_generated, and a playground's simulating message: the round
-- trip that published them answered without an error), so that its
-- settlement does not publish them again while the room surely holds them
-- (settle.lua), and reads what awaitCallback checks next. The note is its
-- time (ms, Redis's clock, as settle.lua reads it). Only a channel still
-- awaiting its callback is noted: a settled one needs no note, and a
-- record gone meanwhile (settled and folded, archived, expired) is not
-- written back.
-- KEYS[1] channel hash.
-- Returns {status, message, outcome}, a field not there as nil.
local v = redis.call('HMGET', KEYS[1], 'status', 'message', 'outcome')
if v[1] == 'ai_generated' then
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[1], 'announced', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
return v

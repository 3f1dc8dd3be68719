-- Notes that an event-driven channel's generation messages reached its
-- room (ai_generated, and a playground's simulating message: the round
-- trip that published them answered without an error), so that its
-- settlement does not publish them again (callback.lua, fire.lua), and
-- reads what awaitCallback checks next. Only a channel still awaiting its
-- callback is noted: a settled one needs no note, and a record gone
-- meanwhile (settled and folded, archived, expired) is not written back.
-- KEYS[1] channel hash.
-- Returns {status, message, outcome}, a field not there as nil.
local v = redis.call('HMGET', KEYS[1], 'status', 'message', 'outcome')
if v[1] == 'ai_generated' then
  redis.call('HSET', KEYS[1], 'announced', 1)
end
return v

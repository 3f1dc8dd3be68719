-- Reserve an Idempotency-Key for a request, or tell what holds it.
-- KEYS[1] the key's record; KEYS[2] its in-progress lease (same slot).
-- ARGV[1] this request's record (JSON, "done":false); ARGV[2] record TTL
-- (s); ARGV[3] lease (ms).
-- Returns {1} reserved; {0, record} a finished request, or one still in
-- progress (its lease, kept by Redis's clock, has not run out); {2, record}
-- a request whose acceptance never finished (its lease ran out: a failed
-- submission whose release failed too); {3} gone meanwhile, ask again.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  return {1}
end
local raw = redis.call('GET', KEYS[1])
if not raw then
  return {3}
end
if string.find(raw, '"done":true', 1, true) or redis.call('EXISTS', KEYS[2]) == 1 then
  return {0, raw}
end
return {2, raw}

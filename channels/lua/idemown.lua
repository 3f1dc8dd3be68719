-- Confirm or release an Idempotency-Key's reservation for the request
-- that reserved it, and only while the key still stands for that request:
-- a repeat may have taken it over meanwhile (idemtake.lua), and the
-- repeat's reservation must stand.
-- KEYS[1] the key's record; KEYS[2] its in-progress lease (same slot).
-- ARGV[1] the caller's record as reserved ("done":false); ARGV[2] the same
-- confirmed ("done":true), or empty to release the key.
-- Returns 1 when done, 0 when the key stands for another request or is
-- gone.
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] and cur ~= ARGV[2] then
  return 0
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1], KEYS[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
end
return 1

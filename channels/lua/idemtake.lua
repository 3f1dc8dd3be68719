-- Take over an Idempotency-Key whose first request never finished being
-- accepted, if its record is still the one seen (ARGV[1]).
-- KEYS[1] the key's record; KEYS[2] its in-progress lease.
-- ARGV[2] this request's record; ARGV[3] lease (ms). Returns 1 when taken.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
return 1

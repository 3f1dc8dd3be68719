-- Give back a permit and record the tokens its answer reported.
-- KEYS as acquire.lua. ARGV[1] permit id; ARGV[2] tokens (0: none);
-- ARGV[3] the unix second they are counted in; ARGV[4] the hash's TTL (ms);
-- ARGV[5] '1' to drop the permit's RPM entry too (an admission whose
-- caller left without using it).
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[5] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[1])
end
local tokens = tonumber(ARGV[2])
if tokens > 0 then
  redis.call('HINCRBY', KEYS[3], ARGV[3], tokens)
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
return 0

-- Take channels not accepted after all out of their log indexes, each only
-- if its record is not in Redis, in one step (a submission landing late
-- writes its record and its entries together, so it cannot slip between
-- the look and the removal). One Redis only: the keys span slots.
-- For each channel, in order: KEYS its record, then its n index keys;
-- ARGV n, then its id.
-- Returns, per channel, 1 if taken out, 0 if its record stands.
local out = {}
local k = 1
for i = 1, #ARGV, 2 do
  local n = tonumber(ARGV[i])
  if redis.call('EXISTS', KEYS[k]) == 0 then
    for j = k + 1, k + n do
      redis.call('ZREM', KEYS[j], ARGV[i + 1])
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
  k = k + n + 1
end
return out

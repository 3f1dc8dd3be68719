-- record.lua run alone: KEYS and ARGV are its K and A. KEYS[2] is the
-- channel's withdrawn mark (unrecord.lua): a channel taken back before its
-- record was written is not recorded; returns 0 then, else 1. A record
-- that exists already (the script sent again after its answer was lost)
-- stands as it is.
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then
  if redis.call('EXISTS', KEYS[2]) == 1 then
    return 0
  end
  return 1
end
return record(KEYS, ARGV)

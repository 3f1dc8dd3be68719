-- record.lua run alone: KEYS and ARGV are its K and A.
return record(KEYS, ARGV)

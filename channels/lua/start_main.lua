-- start.lua run alone: KEYS[1] ch, KEYS[2] tl; ARGV[1] now, ARGV[2]
-- entry, ARGV[3] restart.
return start(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], false)

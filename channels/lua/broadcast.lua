-- Logs that a channel's room was sent its message of one status: once per
-- status, however often the side effects that send it are redone (after a
-- crash, by a run that lost the race, by a settlement done again). Sent in
-- the pipeline of the publish, right after it, so the entry takes its
-- place on the timeline in the order things happened.
--
-- KEYS[1] P:ch:{cid}      the channel's hash; field "bc:<status>" marks the entry as written
-- KEYS[2] P:ch:{cid}:tl   the timeline list (not written: the entry goes to
--                         the record's, tl.lua)
-- ARGV[1] the message's status
-- ARGV[2] the entry
--
-- Returns 1 when it wrote the entry, 0 when it was written before or the
-- channel is gone.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if redis.call('HSETNX', KEYS[1], 'bc:' .. ARGV[1], 1) == 0 then
  return 0
end
tlappend(KEYS[1], {ARGV[2]})
return 1

-- Take back the record of a sync run whose record round trip failed
-- (takeBackSync): the channel is marked withdrawn (KEYS[2], for ARGV[1]
-- seconds), so that a record script Redis runs later writes nothing
-- (record_main.lua), and the record (KEYS[1]) and its earlier versions'
-- timeline list (KEYS[3]) go. Unless a repeat of its Idempotency-Key found
-- the record standing and was answered with it (field "kept",
-- idemsettle.lua): then it stays, and runs when its lease runs out.
-- Returns 1 when taken back, 0 when kept.
if redis.call('HEXISTS', KEYS[1], 'kept') == 1 then
  return 0
end
redis.call('SET', KEYS[2], 1, 'EX', ARGV[1])
redis.call('DEL', KEYS[1], KEYS[3])
return 1

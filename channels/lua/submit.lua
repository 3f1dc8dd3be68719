-- Submissions on one Redis (not a Cluster, where the channel, the queue and
-- the log indexes live in different slots), a batch of them (rdb.Merge's
-- Call): for each, enqueue.lua, then, if the task was queued, record.lua
-- and the channel's log-index entries, so that a refused task writes
-- nothing, a queued one is never claimed before its record exists, and its
-- entries stand exactly when its record does (unrecord.lua takes them out
-- with it). The batch's entries go as one ZADD per index, after every
-- call (a batch is at most rdb.Shared's 256 calls: 512 arguments, well
-- within unpack's limit). A call that fails is an error reply of its own,
-- and writes no entries; the others go on.
-- Per call, in ARGV: its number of keys and of arguments, then its
-- arguments; its keys follow the previous call's in KEYS.
-- A call's K[1..5], A[1..8]: enqueue.lua's; K[6..7]: record.lua's, K[7]
-- being the channel's withdrawn mark (unrecord.lua: a submission taken
-- back before it ran fails, and writes nothing); K[8..]: the log indexes.
-- A[9] the entries' score; A[10] the channel id; A[11] the indexes' time
-- to live (seconds); A[12] a character per index, '1' when its expiry is
-- to be set; A[13..]: record.lua's.
-- Returns enqueue.lua's reply per call ({0, 0} for a submission whose
-- record exists: it ran before, and was queued then).
local function submit(K, A)
  -- One look for two cases: the channel marked withdrawn, or its record
  -- written by this very submission already (its round trip sent again
  -- by the client after the answer was lost), which then stands as it is.
  if redis.call('EXISTS', K[6], K[7]) > 0 then
    if redis.call('EXISTS', K[7]) == 1 then
      error({err = 'WITHDRAWN the submission was taken back before it ran'})
    end
    return {0, 0}
  end
  local r = enqueue(K, A)
  if r[1] >= 0 then
    record({K[6], K[7]}, {unpack(A, 13)})
  end
  return r
end

local out, order, adds, expires = {}, {}, {}, {}
local k, a = 1, 1
while a <= #ARGV do
  local nk, na = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local K = {unpack(KEYS, k, k + nk - 1)}
  local A = {unpack(ARGV, a + 2, a + 1 + na)}
  for i = 8, nk do
    if string.byte(A[12], i - 7) == 49 then
      expires[K[i]] = A[11]
    end
  end
  local ok, r = pcall(submit, K, A)
  if not ok then
    r = redis.error_reply(type(r) == 'table' and r.err or tostring(r))
  elseif r[1] >= 0 then
    for i = 8, nk do
      local zs = adds[K[i]]
      if not zs then
        zs = {}
        adds[K[i]] = zs
        order[#order + 1] = K[i]
      end
      zs[#zs + 1] = A[9]
      zs[#zs + 1] = A[10]
    end
  end
  out[#out + 1] = r
  k, a = k + nk, a + 2 + na
end
for _, key in ipairs(order) do
  redis.call('ZADD', key, unpack(adds[key]))
  if expires[key] then
    redis.call('EXPIRE', key, expires[key])
  end
end
return out

-- Submissions on one Redis (not a Cluster, where the channel, the queue and
-- the log indexes live in different slots), a batch of them (rdb.Merge's
-- Call): for each, enqueue.lua (or the take, below), then, if the task was
-- queued or taken, record.lua and the channel's log-index entries, so that
-- a refused task writes nothing, a queued one is never claimed before its
-- record exists, and its entries stand exactly when its record does
-- (unrecord.lua takes them out with it). The batch's entries go as one ZADD per index, after every
-- call (a batch is at most rdb.Shared's 256 calls: 512 arguments, well
-- within unpack's limit). A call that fails is an error reply of its own,
-- and writes no entries; the others go on.
-- Per call, in ARGV: its number of keys and of arguments, then its
-- arguments; its keys follow the previous call's in KEYS.
-- A call's K[1..5], A[1..8]: enqueue.lua's; K[6..7]: record.lua's, K[7]
-- being the channel's withdrawn mark (unrecord.lua: a submission taken
-- back before it ran fails, and writes nothing); K[8] the queue's lease
-- set; K[9..]: the log indexes.
-- A[9] the entries' score; A[10] the channel id; A[11] the indexes' time
-- to live (seconds); A[12] a character per index, '1' when its expiry is
-- to be set; A[13] '0', or the lease deadline (unix ms) under which the
-- submitting node, with a worker free, takes the task at once; A[14],
-- A[15] start.lua's now and entry; A[16..]: record.lua's.
-- The take: when nothing else is ready (the queue's ready counter is 0,
-- and the legacy lists are known empty), the task goes straight into the
-- lease set, as a claim would lease it ("<pid>/<cid>"), within the
-- project's rate like any submission, and is started (start.lua): it
-- overtakes no task. Else it is queued and waits its turn.
-- Returns enqueue.lua's reply per call ({0, 0} for a submission whose
-- record exists: it ran before, and was queued then; {1, taken} for a
-- task taken, or {1, 0} for a take sent again), with start.lua's reply as
-- a third field when it was taken.
local function take(K, A)
  if A[13] == '0' or A[8] ~= '0' or tonumber(A[3]) < 1 or tonumber(A[4]) < 1
    or tonumber(redis.call('GET', K[3]) or '0') > 0 then
    return nil
  end
  local taken = 0
  local rate = tonumber(A[5])
  if rate > 0 then
    local wait
    wait, taken = gcra(K[5], rate, tonumber(A[6]), A[7])
    if wait > 0 then
      return {-3, wait}
    end
  end
  redis.call('ZADD', K[8], A[13], A[2] .. '/' .. A[1])
  return {1, taken}
end

local function submit(K, A)
  -- One look for two cases: the channel marked withdrawn, or its record
  -- written by this very submission already (its round trip sent again
  -- by the client after the answer was lost), which then stands as it is.
  if redis.call('EXISTS', K[6], K[7]) > 0 then
    if redis.call('EXISTS', K[7]) == 1 then
      error({err = 'WITHDRAWN the submission was taken back before it ran'})
    end
    -- Sent again after a take: its lease, untouched since (nobody ran or
    -- reclaimed it), says so; the node runs it, as a start answered again.
    if A[13] ~= '0' and tonumber(redis.call('ZSCORE', K[8], A[2] .. '/' .. A[1])) == tonumber(A[13]) then
      return {1, 0, start(K[6], nil, A[14], A[15], A[15], true)}
    end
    return {0, 0}
  end
  local r = take(K, A)
  local taken = r ~= nil and r[1] > 0
  if not r then
    r = enqueue(K, A)
  end
  if r[1] < 0 then
    return r
  end
  record({K[6], K[7]}, {unpack(A, 16)})
  if taken then
    r[3] = start(K[6], nil, A[14], A[15], A[15], false)
  end
  return r
end

local out, order, adds, expires = {}, {}, {}, {}
local k, a = 1, 1
while a <= #ARGV do
  local nk, na = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local K = {unpack(KEYS, k, k + nk - 1)}
  local A = {unpack(ARGV, a + 2, a + 1 + na)}
  for i = 9, nk do
    if string.byte(A[12], i - 8) == 49 then
      expires[K[i]] = A[11]
    end
  end
  local ok, r = pcall(submit, K, A)
  if not ok then
    r = redis.error_reply(type(r) == 'table' and r.err or tostring(r))
  elseif r[1] >= 0 then
    for i = 9, nk do
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

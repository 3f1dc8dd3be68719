-- A claim on one Redis (not a Cluster, where the tasks' records live in
-- other slots than the queue): claim.lua, then start.lua for each task it
-- leased, in one script. The records' keys are not declared (they are
-- known only once claimed), which a single Redis allows.
-- KEYS, ARGV[1..4]: claim.lua's; ARGV[5] the records' key prefix
-- ("P:ch:{"); ARGV[6..8] start.lua's now, entry and restart.
-- Returns {members, replies}: the lease members claimed and, for each,
-- start.lua's reply.
local members, again = claim(KEYS, ARGV)
local replies = {}
for i, m in ipairs(members) do
  local ch = ARGV[5] .. string.match(m, '([^/]*)$') .. '}'
  replies[i] = start(ch, ch .. ':tl', ARGV[6], ARGV[7], ARGV[8], again)
end
return {members, replies}

-- Admit synchronous runs or submissions of a project under its rate (the
-- GCRA prelude), a block of them at once.
-- KEYS[1] the project's rate key; ARGV[1] rate (tasks/s, > 0); ARGV[2]
-- burst; ARGV[3] the tasks asked for (a node's block).
-- Returns {0, tasks taken}, or {the milliseconds to wait, 0}.
local wait, n = gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3])
return {wait, n}

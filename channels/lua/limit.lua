-- Admit one synchronous run of a project under its rate (the GCRA prelude).
-- KEYS[1] the project's rate key; ARGV[1] rate (tasks/s, > 0); ARGV[2] burst.
-- Returns 0, or the milliseconds to wait.
return gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))

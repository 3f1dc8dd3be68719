-- GCRA (generic cell rate algorithm), the prelude of the scripts that
-- admit submissions. One key per project holds its theoretical arrival
-- time (TAT, unix µs); the clock is Redis's own TIME, so the nodes' clocks
-- do not matter. rate is tasks per second (> 0), burst the most tasks
-- taken at once, n how many tasks the caller asks for at once (a node's
-- block; 1 when nil). Returns 0 and the tasks taken (n, or 1 when n do not
-- fit but one does), moving the TAT; otherwise the milliseconds until one
-- task may go, and 0 (and changes nothing).
local function gcra(key, rate, burst, n)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local step = 1000000 / rate
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then
    tat = now
  end
  n = math.max(1, math.min(tonumber(n) or 1, burst))
  if now < tat + step * (n - burst) then
    n = 1
  end
  local due = tat + step * n
  local allowed = due - step * burst
  if now < allowed then
    return math.ceil((allowed - now) / 1000), 0
  end
  redis.call('SET', key, string.format('%.0f', due), 'PX', math.ceil((due - now) / 1000))
  return 0, n
end

-- GCRA (generic cell rate algorithm), the prelude of the scripts that
-- admit submissions. One key per project holds its theoretical arrival
-- time (TAT, unix µs); the clock is Redis's own TIME, so the nodes' clocks
-- do not matter. rate is tasks per second (> 0), burst the most tasks
-- taken at once. Returns 0 and moves the TAT when a task may go now,
-- otherwise the milliseconds until it may (and changes nothing).
local function gcra(key, rate, burst)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local step = 1000000 / rate
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then
    tat = now
  end
  local due = tat + step
  local allowed = due - step * burst
  if now < allowed then
    return math.ceil((allowed - now) / 1000)
  end
  redis.call('SET', key, string.format('%.0f', due), 'PX', math.ceil((due - now) / 1000))
  return 0
end

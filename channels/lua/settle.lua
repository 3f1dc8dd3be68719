-- What the outcome that settles an event-driven channel (callback.lua,
-- fire.lua) decides of the settlement that follows it.

-- settling returns the generation's room messages for the settlement to
-- send again before the final one (generated and sim, as stored), and the
-- final message's "broadcast" timeline entry for the outcome to write with
-- itself (bc, '' for none): errored's for a final status "error", else
-- completed's. The room is known to hold the generation's
-- messages when the generation noted them sent (announced: the time of the
-- note, ms, announce.lua) less than keep ms ago (the room keeps them for
-- the retention after their publish; keep is half of it): then nothing is
-- sent again and the outcome writes entry. Otherwise they are sent again
-- first (the room drops those it has), and the settlement logs each
-- message's entry as it sends it (broadcast.lua), so that the timeline
-- keeps their order. An empty entry (a node without rooms) is never
-- written.
local function settling(generated, sim, announced, status, errored, completed, keep)
  local entry = completed
  if status == 'error' then
    entry = errored
  end
  if entry ~= '' and tonumber(announced or '') then
    local t = redis.call('TIME')
    if tonumber(announced) + tonumber(keep) > tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) then
      return '', '', entry
    end
  end
  return generated or '', sim or '', ''
end

-- settled is the outcome's timeline entries and extra record fields: its
-- own entry, then bc when there is one (and its once-only marker,
-- bc:<status>, see broadcast.lua).
local function settled(own, bc, status)
  if bc == '' then
    return {own}, {}
  end
  return {own, bc}, {'bc:' .. status, 1}
end

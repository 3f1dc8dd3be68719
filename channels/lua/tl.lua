-- A channel's timeline lives in its record, field "tl": its entries
-- (JSON, which never holds a raw newline), oldest first, one per line.
-- Entries written where the record has left Redis (an archived channel's
-- late notes) and by earlier versions are in the list P:ch:{cid}:tl,
-- read before the field (Service.Timeline).

-- tljoin returns the field cur (false or nil when unset) with entries
-- (a table of strings) appended.
local function tljoin(cur, entries)
  local s = table.concat(entries, '\n')
  if cur and cur ~= '' then
    return cur .. '\n' .. s
  end
  return s
end

-- tlappend appends entries (a table) to the timeline of the record ch.
local function tlappend(ch, entries)
  redis.call('HSET', ch, 'tl', tljoin(redis.call('HGET', ch, 'tl'), entries))
end

-- Which of the given job ids have a message somewhere in a stretch of one structure: a queue
-- list (LRANGE from an index: pushes at the head only move what is not read yet further on,
-- so nothing is skipped), the delayed set (ZSCAN) or the held hash (HSCAN) from a cursor,
-- which return everything present for the whole scan. The search runs here so no message
-- leaves Redis. Returns the next position (-1 at the end) and the ids found.
-- KEYS (after the prelude's): the list, for 'list'.
-- ARGV: 'list', 'delayed' or 'held', start (or cursor), count, then the ids.
local mode, start, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local wanted = {}
for i = 4, #ARGV do wanted[ARGV[i]] = true end
local items, nextpos
if mode == 'list' then
  items = redis.call('LRANGE', KEYS[NK + 1], start, start + count - 1)
  nextpos = #items < count and -1 or start + count
else
  -- HSCAN gives field, value pairs (the value is the message); ZSCAN member, score pairs.
  local scan = mode == 'held' and 'HSCAN' or 'ZSCAN'
  local reply = redis.call(scan, mode == 'held' and K.held or K.delayed, start, 'COUNT', count)
  nextpos = tonumber(reply[1])
  if nextpos == 0 then nextpos = -1 end
  items = {}
  local first = mode == 'held' and 2 or 1
  for i = first, #reply[2], 2 do items[#items + 1] = reply[2][i] end
end
local found = {}
for _, item in ipairs(items) do
  local id = string.match(item, '"id": ?"([^"]+)"')
  if id and wanted[id] then
    found[#found + 1] = id
    wanted[id] = nil
  end
end
return {nextpos, found}

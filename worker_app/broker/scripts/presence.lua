-- Which of the given job ids have a message somewhere in a stretch of one structure: a queue
-- list (LRANGE start..stop), the delayed set (ZRANGE start..stop) or the held hash (HSCAN from
-- a cursor). The search runs here so no message leaves Redis. Returns the next position
-- (-1 at the end) and the ids found.
-- KEYS (after the prelude's): the list, for 'list'.
-- ARGV: 'list', 'delayed' or 'held', start (or cursor), count, then the ids.
local mode, start, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local wanted = {}
for i = 4, #ARGV do wanted[ARGV[i]] = true end
local items, nextpos
if mode == 'held' then
  local reply = redis.call('HSCAN', K.held, start, 'COUNT', count)
  nextpos = tonumber(reply[1])
  if nextpos == 0 then nextpos = -1 end
  items = {}
  for i = 2, #reply[2], 2 do items[#items + 1] = reply[2][i] end
else
  if mode == 'list' then
    items = redis.call('LRANGE', KEYS[NK + 1], start, start + count - 1)
  else
    items = redis.call('ZRANGE', K.delayed, start, start + count - 1)
  end
  nextpos = #items < count and -1 or start + count
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

--! use records
-- Purge: take waiting messages off a queue list (up to a batch), or given parked members off
-- the delayed set, and end their jobs cancelled with a reason. Returns how many were removed.
-- KEYS (after the prelude's): the queue list.
-- ARGV: 'list' or 'parked', now, now as ISO text, retention seconds, reason, then for 'list'
--   the batch size, for 'parked' the members.
local list, mode = KEYS[NK + 1], ARGV[1]
local now, now_iso, retention, reason = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local items = {}
if mode == 'list' then
  items = redis.call('RPOP', list, ARGV[6]) or {}
else
  for i = 6, #ARGV do
    if redis.call('ZREM', K.delayed, ARGV[i]) == 1 then
      local cut = string.find(ARGV[i], '\n', 1, true)
      items[#items + 1] = string.sub(ARGV[i], cut + 1)
    end
  end
end
for _, item in ipairs(items) do
  local ok, msg = pcall(cjson.decode, item)
  local headers = ok and type(msg) == 'table' and msg.headers
  if type(headers) == 'table' and type(headers.id) == 'string' then
    local status = redis.call('HGET', K.job .. headers.id, 'status')
    if status == 'pending' or status == 'scheduled' or status == 'retrying' then
      finish_record(headers.id, 'cancelled', now, now_iso, retention, {'last_error', reason})
    end
  end
end
return #items

-- Dead-letter entries: the functions the DLQ scripts share. An entry is K.dlq_entry .. id
-- (JSON), listed in K.dlq_index and in one index per filter value (K.dlq_by .. dim .. ':' ..
-- value), all scored by when it failed.

local DLQ_DIMENSIONS = {{'task', 'task_name'}, {'reason', 'reason'}, {'queue', 'queue'},
  {'fingerprint', 'fingerprint'}}

local function dlq_unindex(id, raw)
  local ok, e = pcall(cjson.decode, raw)
  if not ok then return end
  for _, pair in ipairs(DLQ_DIMENSIONS) do
    local v = e[pair[2]]
    if type(v) == 'string' then redis.call('ZREM', K.dlq_by .. pair[1] .. ':' .. v, id) end
  end
end

local function dlq_remove(id)
  local key = K.dlq_entry .. id
  local raw = redis.call('GET', key)
  if raw then dlq_unindex(id, raw) end
  redis.call('DEL', key)
  redis.call('ZREM', K.dlq_index, id)
  return raw
end

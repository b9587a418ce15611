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

-- Write an entry (replacing one with the same id), then trim what is older than ``cutoff`` and
-- what is beyond ``max`` entries, counting the trimmed. ``dims`` are its task, reason, queue
-- and fingerprint. Returns {trimmed by retention, trimmed by size}.
local function dlq_write(id, raw, score, cutoff, max, dims)
  dlq_remove(id)
  redis.call('SET', K.dlq_entry .. id, raw)
  redis.call('ZADD', K.dlq_index, score, id)
  for i, pair in ipairs(DLQ_DIMENSIONS) do
    redis.call('ZADD', K.dlq_by .. pair[1] .. ':' .. dims[i], score, id)
    redis.call('SADD', K.dlq_values .. pair[1], dims[i])
  end
  local expired = redis.call('ZRANGEBYSCORE', K.dlq_index, '-inf', '(' .. cutoff)
  for _, old in ipairs(expired) do dlq_remove(old) end
  local over = redis.call('ZCARD', K.dlq_index) - max
  local oldest = {}
  if over > 0 then oldest = redis.call('ZRANGE', K.dlq_index, 0, over - 1) end
  for _, old in ipairs(oldest) do dlq_remove(old) end
  local trimmed = #expired + #oldest
  if trimmed > 0 then redis.call('INCRBY', K.dlq_trimmed, trimmed) end
  return {#expired, #oldest}
end

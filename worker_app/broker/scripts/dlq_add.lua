--! use dlq
-- Write a dead-letter entry (replacing one with the same id), then trim what is older than the
-- retention and what is beyond the size cap, counting the trimmed.
-- ARGV: id, entry JSON, failed_at, retention cutoff, max size, then its task, reason, queue and
-- fingerprint. Returns {trimmed by retention, trimmed by size}.
local id, raw, score = ARGV[1], ARGV[2], ARGV[3]
local cutoff, max = tonumber(ARGV[4]), tonumber(ARGV[5])
dlq_remove(id)
redis.call('SET', K.dlq_entry .. id, raw)
redis.call('ZADD', K.dlq_index, score, id)
for i, pair in ipairs(DLQ_DIMENSIONS) do
  redis.call('ZADD', K.dlq_by .. pair[1] .. ':' .. ARGV[5 + i], score, id)
  redis.call('SADD', K.dlq_values .. pair[1], ARGV[5 + i])
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

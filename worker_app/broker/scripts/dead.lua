--! use records
--! use dlq
-- Dead-letter a held message's job and release the message, in one step: the message is let go
-- only once its entry is stored (an error on the way leaves it held, and the caller tries again
-- or the message comes back). Running it twice stores the same entry once.
-- ARGV: the held tag ('' none), job id ('' none), then as dlq_add.lua: entry id, entry JSON,
--   failed_at, retention cutoff, max size, task, reason, queue, fingerprint; then now, now as
--   ISO text, record retention seconds, the job's last error.
-- Returns {1, trimmed by retention, trimmed by size}, or {0} when the tag is no longer held
-- (its lease lapsed and it went back on its queue: it is dealt with when it fails again).
local tag, id = ARGV[1], ARGV[2]
local raw = string.sub(tag, 1, #H.raw_tag) == H.raw_tag
local hash = raw and K.held_raw or K.held
if tag ~= '' and redis.call('HEXISTS', hash, tag) == 0 then return {0} end
local trimmed = dlq_write(ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]),
  {ARGV[8], ARGV[9], ARGV[10], ARGV[11]})
if id ~= '' then
  finish_record(id, 'failed', ARGV[12], ARGV[13], ARGV[14], {'last_error', ARGV[15],
    'reason', ARGV[9]})
  redis.call('DEL', K.deaths .. id)
end
if tag ~= '' then
  redis.call('ZREM', K.held_index, tag)
  redis.call('HDEL', hash, tag)
  redis.call('SREM', K.running, tag)
end
return {1, trimmed[1], trimmed[2]}

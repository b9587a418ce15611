--! use records
-- Publish one message: write its job record (when it has one) and push it onto its queue list,
-- or park it in the delayed set until due, in one atomic call; a message never exists without
-- its record. A push onto a short list also leaves a wake-up token for idle workers.
--
-- KEYS (after the prelude's): the queue list.
-- ARGV: 'list', 'park' or 'none' (the record alone), due time, the message, wake-up cap; then,
--   when the message has a record: id, task, queue, status, now, run_at, attempt, payload JSON,
--   reset, once (see publish_record). Returns the record's status before ('' for none or no record).
--
-- Idempotent by job id: a message whose job already waits for the same attempt (its record
-- pending, scheduled or retrying with that attempt number) was published already — a publish
-- sent again after its reply was lost — and is neither pushed nor parked again.
local list, mode, due, message, cap = KEYS[NK + 1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local WAITING = {pending = true, scheduled = true, retrying = true}
local old = ''
if #ARGV > 4 and mode ~= 'none' then
  local status, attempts = unpack(redis.call('HMGET', K.job .. ARGV[5], 'status', 'attempts'))
  if status and WAITING[status] and attempts == ARGV[11] then return status end
  -- An id generated for this publish ('new') has a record only if this publish ran already
  -- (sent again after its reply was lost): whatever its job did since, nothing more to do.
  if status and ARGV[13] == 'new' then return status end
end
if #ARGV > 4 then
  old = publish_record(ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12],
    ARGV[13], ARGV[14])
end
if mode == 'park' then
  redis.call('ZADD', K.delayed, due, list .. '\n' .. message)
elseif mode == 'list' and redis.call('LPUSH', list, message) <= cap then
  redis.call('LPUSH', K.wake .. list, '')
end
return old

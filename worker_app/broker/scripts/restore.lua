--! use records
-- Put held messages back on their queue lists (their worker was lost, or gave them back), each
-- only if it is still held exactly as read, and let their jobs wait again. Bad items (held
-- under a raw tag) go back as they came.
-- ARGV: now, wake-up cap, 'head' or 'tail' (where on the list: the tail is taken next), the
--   lease ceiling ('' for none: only a lease at or below it is restored, so a renewal made
--   since the sweep read the index wins), why: 'lost' (its worker was lost: a message whose
--   task had started counts a death of its job), 'died' (its pool process died running it: a
--   death) or 'back' (given back unrun, or by a stopping worker: no death), then per message:
--   tag, the held value as read, the list, the message to push (with its redelivered flags
--   set), job id ('' none).
-- Returns the tags put back.
local now, cap, side, ceiling = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local why = ARGV[5]
local back = {}
for i = 6, #ARGV, 5 do
  local tag, seen, list, message, id = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local raw = string.sub(tag, 1, #H.raw_tag) == H.raw_tag
  local hash = raw and K.held_raw or K.held
  local lease = tonumber(redis.call('ZSCORE', K.held_index, tag))
  if ceiling and lease and lease > ceiling then
    -- renewed since it was read: its worker is alive
  elseif redis.call('HGET', hash, tag) == seen then
    redis.call('HDEL', hash, tag)
    redis.call('ZREM', K.held_index, tag)
    local n = redis.call(side == 'head' and 'LPUSH' or 'RPUSH', list, message)
    if n <= cap then redis.call('LPUSH', K.wake .. list, '') end
    if id ~= '' then requeue_record(id, now) end
    local started = redis.call('SREM', K.running, tag) == 1
    if id ~= '' and (why == 'died' or (why == 'lost' and started)) then
      redis.call('INCR', K.deaths .. id)
      redis.call('EXPIRE', K.deaths .. id, tonumber(H.deaths_ttl))
    end
    back[#back + 1] = tag
  elseif redis.call('HEXISTS', hash, tag) == 0 then
    redis.call('ZREM', K.held_index, tag)  -- acked meanwhile: only its lease was left
    redis.call('SREM', K.running, tag)
  end
end
return back

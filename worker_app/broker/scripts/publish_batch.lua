--! use records
-- Publish a batch of new jobs (ids never used before) of one task for one queue list, each
-- with its record: one HSET per job, the indexes and the list written once for the batch.
--
-- KEYS (after the prelude's): the queue list.
-- ARGV: task, queue, status, 'list' or 'park', wake-up cap, number of jobs; then per job: id,
--   created, run_at, payload JSON, message, due time. Returns the number of jobs.
local list, task, queue, status, mode = KEYS[NK + 1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local cap, n = tonumber(ARGV[5]), tonumber(ARGV[6])
local scored, messages = {}, {}
for i = 0, n - 1 do
  local at = 7 + 6 * i
  local id, created = ARGV[at], ARGV[at + 1]
  redis.call('HSET', K.job .. id, 'id', id, 'type', task, 'queue', queue, 'status', status,
    'created_at', created, 'updated_at', created, 'run_at', ARGV[at + 2], 'attempts', 0,
    'payload', ARGV[at + 3])
  scored[#scored + 1] = created
  scored[#scored + 1] = id
  if mode == 'park' then
    messages[#messages + 1] = ARGV[at + 5]
    messages[#messages + 1] = list .. '\n' .. ARGV[at + 4]
  else
    messages[#messages + 1] = ARGV[at + 4]
  end
end
redis.call('ZADD', K.by_status .. status, unpack(scored))
redis.call('ZADD', K.jobs_index, unpack(scored))
redis.call('ZADD', K.by_type .. task, unpack(scored))
redis.call('ZADD', K.by_queue .. queue, unpack(scored))
if mode == 'park' then
  redis.call('ZADD', K.delayed, unpack(messages))
else
  local before = redis.call('LPUSH', list, unpack(messages)) - n
  if before < cap then
    local tokens = {}
    for i = 1, math.min(n, cap - before) do tokens[i] = '' end
    redis.call('LPUSH', K.wake .. list, unpack(tokens))
  end
end
return n

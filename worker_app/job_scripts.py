"""The Lua scripts behind job records: each transition of a job is one atomic call.

Every script moves the job between the status indexes (``jobs:by:status:<status>``) as it
changes the record, so listings by status never read a record they do not return.
"""

MOVE = """
local function move(id, old, new, score)
  if old then redis.call('ZREM', ARGV[1] .. 'jobs:by:status:' .. old, id) end
  redis.call('ZADD', ARGV[1] .. 'jobs:by:status:' .. new, score, id)
end
"""

# ARGV: prefix, id, type, queue, status, now, run_at, attempt, payload json, reset ('1' on a
# fresh run: first publish, requeue, retry by an operator; 'new' for an id just generated, which
# no record can have), once ('1': a publish-once repeat of a job that has a record already
# changes nothing).
RECORD = (
    MOVE
    + """
local function record()
  local key = ARGV[1] .. 'job:' .. ARGV[2]
  local old, created
  if ARGV[10] ~= 'new' then
    old, created = unpack(redis.call('HMGET', key, 'status', 'created_at'))
  end
  if old and ARGV[11] == '1' then return old end
  if old == 'cancelled' and ARGV[10] ~= '1' then return old end
  if not created or ARGV[10] == '1' then created = ARGV[6] end
  redis.call('HSET', key, 'id', ARGV[2], 'type', ARGV[3], 'queue', ARGV[4], 'status', ARGV[5],
    'created_at', created, 'updated_at', ARGV[6], 'run_at', ARGV[7], 'attempts', ARGV[8],
    'payload', ARGV[9])
  if old then  -- a new record has nothing to clear and no expiry
    if ARGV[10] == '1' then
      redis.call('HDEL', key, 'started_at', 'finished_at', 'result', 'last_error',
        'cancel_requested')
    end
    redis.call('PERSIST', key)
  end
  move(ARGV[2], old, ARGV[5], created)
  redis.call('ZADD', ARGV[1] .. 'jobs:index', created, ARGV[2])
  redis.call('ZADD', ARGV[1] .. 'jobs:by:type:' .. ARGV[3], created, ARGV[2])
  redis.call('ZADD', ARGV[1] .. 'jobs:by:queue:' .. ARGV[4], created, ARGV[2])
  return old or ''
end
"""
)
PUBLISHED = RECORD + "return record()\n"
# The record and its message in one call: a message never exists without its record, and a
# publish costs one round trip. KEYS: the queue list, or the delayed set. ARGV: as above, then
# 'list' or 'park', the due time, and the message (for 'park', the delayed set's member).
PUBLISHED_WITH_MESSAGE = (
    RECORD
    + """
local old = record()
local n = #ARGV
if ARGV[n - 2] == 'park' then
  redis.call('ZADD', KEYS[1], ARGV[n - 1], ARGV[n])
else
  redis.call('LPUSH', KEYS[1], ARGV[n])
end
return old
"""
)

# ARGV: prefix, id, now, attempt, hostname, queue, waited seconds ('' unknown), its bucket,
# once ('1': a publish-once first attempt), redelivered ('1': put back after its worker was
# lost). Returns the status before: 'cancelled' means do not run, 'duplicate' that this
# publish-once delivery repeats a job that has ended, or has started before (running now,
# retrying, or deferred back to pending) -- unless it is the lost worker's own message back.
STARTED = (
    MOVE
    + """
local key = ARGV[1] .. 'job:' .. ARGV[2]
local old, created, began = unpack(redis.call('HMGET', key, 'status', 'created_at', 'started_at'))
if old == 'cancelled' then return old end
if ARGV[9] == '1' and old then
  if old == 'succeeded' or old == 'failed' then return 'duplicate' end
  local lost = old == 'active' and ARGV[10] == '1'
  if not lost and began then return 'duplicate' end
end
if ARGV[7] ~= '' then
  -- the count is the sum of the buckets
  local wait = ARGV[1] .. 'wait:' .. ARGV[6]
  redis.call('HINCRBY', wait, ARGV[8], 1)
  redis.call('HINCRBYFLOAT', wait, 'sum', ARGV[7])
end
if not old then return '' end
redis.call('HSET', key, 'status', 'active', 'started_at', ARGV[3], 'updated_at', ARGV[3],
  'attempts', ARGV[4], 'worker', ARGV[5])
move(ARGV[2], old, 'active', created)
return old
"""
)

# ARGV: prefix, id, status, now, retention seconds, then field/value pairs. A record that does
# not exist is not created (messages from foreign producers have none).
FINISHED = (
    MOVE
    + """
local key = ARGV[1] .. 'job:' .. ARGV[2]
local old, created = unpack(redis.call('HMGET', key, 'status', 'created_at'))
if not old then return '' end
redis.call('HSET', key, 'status', ARGV[3], 'updated_at', ARGV[4], 'finished_at', ARGV[4],
  unpack(ARGV, 6))
move(ARGV[2], old, ARGV[3], created)
redis.call('EXPIRE', key, ARGV[5])
return old
"""
)

# ARGV: prefix, id, now, retention. Waiting jobs become cancelled; an active one is flagged.
CANCEL = (
    MOVE
    + """
local key = ARGV[1] .. 'job:' .. ARGV[2]
local old = redis.call('HGET', key, 'status')
if old == 'pending' or old == 'scheduled' or old == 'retrying' then
  redis.call('HSET', key, 'status', 'cancelled', 'updated_at', ARGV[3], 'finished_at', ARGV[3])
  move(ARGV[2], old, 'cancelled', redis.call('HGET', key, 'created_at'))
  redis.call('EXPIRE', key, ARGV[4])
elseif old == 'active' then
  redis.call('HSET', key, 'cancel_requested', ARGV[3])
end
return old or ''
"""
)

# The worker's side of a job's life, as functions the transport's scripts share: a job starts
# in the same call that fetches and holds its message, and ends in the call that releases it.
# Like MOVE, they need the key prefix in ARGV[1].
# ``truthy`` reads a message header as Python would (cjson.null and '' are false).
WORKER_FUNCTIONS = (
    MOVE
    + """
local function truthy(v)
  return v ~= nil and v ~= cjson.null and v ~= false and v ~= '' and v ~= 0
end

-- Start the job of a message: 'run', or 'cancelled' (do not run), or 'duplicate' (a
-- publish-once delivery of a job that has ended, or has started before -- unless this is the
-- lost worker's own message back). A message with an ETA waits in the worker until it is due:
-- its job starts in the pool process (STARTED), when it really starts.
local function start_job(prefix, msg, now, hostname)
  local headers = type(msg) == 'table' and msg.headers
  if type(headers) ~= 'table' or type(headers.id) ~= 'string' then return 'run' end
  if truthy(headers.eta) then return 'run' end
  local id = headers.id
  local retries = tonumber(headers.retries) or 0
  local key = prefix .. 'job:' .. id
  local old, created, began = unpack(redis.call('HMGET', key, 'status', 'created_at', 'started_at'))
  if old == 'cancelled' then return 'cancelled' end
  local once = truthy(headers['x-publish-once']) and not truthy(headers['x-deferred'])
  if old and retries == 0 and once then
    if old == 'succeeded' or old == 'failed' then return 'duplicate' end
    local info = type(msg.properties) == 'table' and msg.properties.delivery_info
    local redelivered = truthy(headers.redelivered)
      or (type(info) == 'table' and truthy(info.redelivered))
    if not (old == 'active' and redelivered) and began then return 'duplicate' end
  end
  if old then
    redis.call('HSET', key, 'status', 'active', 'started_at', now, 'updated_at', now,
      'attempts', retries + 1, 'worker', hostname)
    move(id, old, 'active', created)
  end
  return 'run'
end

-- A job that succeeded: its record (when it has one) ends, and expires. Its result, if any, was
-- written by the pool process (RESULT) before it reported the success.
local function finish_job(prefix, id, now, retention)
  local key = prefix .. 'job:' .. id
  local old, created = unpack(redis.call('HMGET', key, 'status', 'created_at'))
  if not old then return end
  redis.call('HSET', key, 'status', 'succeeded', 'updated_at', now, 'finished_at', now)
  move(id, old, 'succeeded', created)
  redis.call('EXPIRE', key, retention)
end
"""
)

# ARGV: prefix, id, result JSON. The result of a job that returned one, kept in its record (a
# record that does not exist is not created).
RESULT = """
local key = ARGV[1] .. 'job:' .. ARGV[2]
if redis.call('EXISTS', key) == 1 then redis.call('HSET', key, 'result', ARGV[3]) end
"""

# A batch of new jobs (ids never used before) of one task for one queue, with their messages:
# one record each, the indexes and the queue in one command each for the whole batch.
# KEYS: the queue list, or the delayed set. ARGV: prefix, task, queue, status, 'list' or 'park',
# number of jobs, then per job: id, created, run_at, payload json, message (for 'park', the
# delayed set's member), due time.
PUBLISHED_BATCH = """
local prefix, task, queue, status, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local n = tonumber(ARGV[6])
local scored, messages = {}, {}
for i = 0, n - 1 do
  local at = 7 + 6 * i
  local id, created = ARGV[at], ARGV[at + 1]
  redis.call('HSET', prefix .. 'job:' .. id, 'id', id, 'type', task, 'queue', queue,
    'status', status, 'created_at', created, 'updated_at', created, 'run_at', ARGV[at + 2],
    'attempts', 0, 'payload', ARGV[at + 3])
  scored[#scored + 1] = created
  scored[#scored + 1] = id
  if mode == 'park' then messages[#messages + 1] = ARGV[at + 5] end
  messages[#messages + 1] = ARGV[at + 4]
end
redis.call('ZADD', prefix .. 'jobs:by:status:' .. status, unpack(scored))
redis.call('ZADD', prefix .. 'jobs:index', unpack(scored))
redis.call('ZADD', prefix .. 'jobs:by:type:' .. task, unpack(scored))
redis.call('ZADD', prefix .. 'jobs:by:queue:' .. queue, unpack(scored))
if mode == 'park' then
  redis.call('ZADD', KEYS[1], unpack(messages))
else
  redis.call('LPUSH', KEYS[1], unpack(messages))
end
return n
"""

"""The Lua scripts behind job records: each transition of a job is one atomic call.

Every script moves the job between the status indexes (``jobs:by:status:<status>``) as it
changes the record, so listings by status never read a record they do not return. The worker's
fetch script (:data:`FETCH`, called by worker_app.transport) starts the jobs of the messages it
takes and ends the jobs whose messages it releases, in the same call.
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

# The worker's one script: release acked deliveries (ending the jobs that succeeded), pop up to
# ``slots`` messages in the given queue orders, and for each popped or given message start its
# job and hold it (unacked index and hash) -- or drop it when its job was cancelled, or when it
# repeats a publish-once job.
# KEYS: unacked index, unacked hash, the queue lists.
# ARGV: key prefix (first: the shared functions read it there), now, number of queues, slots,
# number of acks, worker name, retention, number of given messages; then per slot the order in
# which to try the queues (1-based positions among the queue keys); then per ack its tag and
# job id ('' when it did not succeed); then per given message its queue position and itself.
# Returns (queue position, verdict, message) triples; the verdict is 'held', 'cancelled',
# 'duplicate', or 'bad' (not a message envelope; not held). With given messages, one more
# element ends the reply: how many messages are left on the queues.
FETCH = (
    WORKER_FUNCTIONS
    + """
local prefix, now, nq, slots = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local nacks, hostname, retention, ngiven = tonumber(ARGV[5]), ARGV[6], ARGV[7], tonumber(ARGV[8])
local acks_at = 9 + slots * nq
local given_at = acks_at + 2 * nacks
if nacks > 0 then
  local tags = {}
  for i = 0, nacks - 1 do
    local at = acks_at + 2 * i
    tags[#tags + 1] = ARGV[at]
    if ARGV[at + 1] ~= '' then finish_job(prefix, ARGV[at + 1], now, retention) end
  end
  redis.call('ZREM', KEYS[1], unpack(tags))
  redis.call('HDEL', KEYS[2], unpack(tags))
end
local function hold(item)
  local ok, msg = pcall(cjson.decode, item)
  local props = ok and type(msg) == 'table' and msg.properties
  local info = type(props) == 'table' and props.delivery_info
  local tag = type(props) == 'table' and props.delivery_tag
  if type(info) ~= 'table' or type(tag) ~= 'string' then return 'bad' end
  local verdict = start_job(prefix, msg, now, hostname)
  if verdict ~= 'run' then return verdict end
  redis.call('ZADD', KEYS[1], now, tag)
  redis.call('HSET', KEYS[2], tag, '[' .. item .. ',' .. cjson.encode(info.exchange) .. ','
    .. cjson.encode(info.routing_key) .. ']')
  return 'held'
end
local out = {}
local function add(q, item)
  out[#out + 1] = q
  out[#out + 1] = hold(item)
  out[#out + 1] = item
end
for i = 0, ngiven - 1 do
  add(tonumber(ARGV[given_at + 2 * i]), ARGV[given_at + 2 * i + 1])
end
-- LMPOP (Redis 7) pops from the first non-empty list in one command; older servers try each.
local lmpop = (tonumber(redis.REDIS_VERSION_NUM) or 0) >= 0x070000
for s = 0, slots - 1 do
  local q, item
  if lmpop and nq > 0 then
    local lists = {}
    for i = 1, nq do lists[i] = KEYS[2 + tonumber(ARGV[8 + s * nq + i])] end
    lists[nq + 1] = 'RIGHT'
    local popped = redis.call('LMPOP', nq, unpack(lists))
    if popped then
      for i = 1, nq do if KEYS[2 + i] == popped[1] then q = i end end
      item = popped[2][1]
    end
  else
    for i = 1, nq do
      q = tonumber(ARGV[8 + s * nq + i])
      item = redis.call('RPOP', KEYS[2 + q])
      if item then break end
    end
  end
  if not item then break end
  add(q, item)
end
if ngiven > 0 then  -- after a BRPOP: is there more, or is the worker idle again?
  local backlog = 0
  for i = 1, nq do backlog = backlog + redis.call('LLEN', KEYS[2 + i]) end
  out[#out + 1] = backlog
end
return out
"""
)

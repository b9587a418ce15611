-- Job records: the functions every script that changes a record shares, so each transition
-- is written once. Keys arrive through the prelude (K, NK); a record is K.job .. id.

local function move(id, old, new, score)
  if old then redis.call('ZREM', K.by_status .. old, id) end
  redis.call('ZADD', K.by_status .. new, score, id)
end

local function index(id, task, queue, created)
  redis.call('ZADD', K.jobs_index, created, id)
  redis.call('ZADD', K.by_type .. task, created, id)
  redis.call('ZADD', K.by_queue .. queue, created, id)
end

-- Write a record's fields and index it (its status index is moved by the caller).
local function write_record(id, task, queue, status, created, now, run_at, attempt, payload)
  redis.call('HSET', K.job .. id, 'id', id, 'type', task, 'queue', queue, 'status', status,
    'created_at', created, 'updated_at', now, 'run_at', run_at, 'attempts', attempt,
    'payload', payload)
  index(id, task, queue, created)
end

-- A header read as Python would (cjson.null, '' and 0 are false).
local function truthy(v)
  return v ~= nil and v ~= cjson.null and v ~= false and v ~= '' and v ~= 0
end

-- Publish: create or move the record of a message being published. ``reset``: '1' for a fresh
-- run (first publish, requeue, operator retry: clears what a previous run left), 'new' for an
-- id just generated (no record can exist), '0' for a retry or deferral (keeps created_at).
-- ``once``: '1' for a publish-once repeat, which changes an existing record not at all.
-- Returns the status before ('' when there was no record).
local function publish_record(id, task, queue, status, now, run_at, attempt, payload, reset, once)
  local key = K.job .. id
  local old, created
  if reset ~= 'new' then
    old, created = unpack(redis.call('HMGET', key, 'status', 'created_at'))
  end
  if old and once == '1' then return old end
  if old == 'cancelled' and reset ~= '1' then return old end
  if not created or reset == '1' then created = now end
  write_record(id, task, queue, status, created, now, run_at, attempt, payload)
  if old then
    if reset == '1' then
      redis.call('HDEL', key, 'started_at', 'finished_at', 'result', 'last_error',
        'cancel_requested')
    end
    redis.call('PERSIST', key)
  end
  move(id, old, status, created)
  return old or ''
end

-- Start: mark the job of a delivery active. Returns 'run', 'cancelled' (do not run) or
-- 'duplicate' (a publish-once delivery of a job that has ended or has started before, unless
-- it is a lost worker's message put back: restored messages carry 'redelivered'). A job
-- without a record is not touched here. Also returns the status before.
local function start_record(id, attempt, once, redelivered, now, hostname)
  local key = K.job .. id
  local old, created, began = unpack(redis.call('HMGET', key, 'status', 'created_at',
    'started_at'))
  if old == 'cancelled' then return 'cancelled', old end
  if old and once then
    if old == 'succeeded' or old == 'failed' then return 'duplicate', old end
    -- Started before: a repeat, unless it is the lost worker's own message put back.
    if began and not redelivered then return 'duplicate', old end
  end
  if old then
    redis.call('HSET', key, 'status', 'active', 'started_at', now, 'updated_at', now,
      'attempts', attempt, 'worker', hostname)
    move(id, old, 'active', created)
  end
  return 'run', old
end

-- What Celery's Redis result backend stores for a task, so a producer that reads results there
-- (a plain Celery app with ``backend=`` this Redis) gets them. Only records marked
-- origin=celery (created at fetch: their producer did not write one) pay for it.
local function celery_result(id, state, result, now_iso, retention)
  local meta = '{"status": ' .. cjson.encode(state) .. ', "result": ' .. result ..
    ', "traceback": null, "children": [], "date_done": ' .. cjson.encode(now_iso) ..
    ', "task_id": ' .. cjson.encode(id) .. '}'
  redis.call('SET', K.celery_result .. id, meta, 'EX', retention)
  redis.call('PUBLISH', K.celery_result .. id, meta)
end

local CELERY_STATES = {succeeded = 'SUCCESS', failed = 'FAILURE', cancelled = 'REVOKED'}

-- Finish: the job ended (succeeded, failed, cancelled); its record expires after the
-- retention. ``fields``: more field/value pairs to set (last_error, ...). A record that does
-- not exist is not created. Returns the status before.
local function finish_record(id, status, now, now_iso, retention, fields)
  local key = K.job .. id
  local old, created, origin, run_at = unpack(redis.call('HMGET', key, 'status', 'created_at',
    'origin', 'run_at'))
  if not old then return '' end
  redis.call('HSET', key, 'status', status, 'updated_at', now, 'finished_at', now)
  if fields and #fields > 0 then redis.call('HSET', key, unpack(fields)) end
  move(id, old, status, created)
  -- Kept until its message, if one is still parked, is due and met: a cancelled job's record
  -- must outlive the message, or the message would find no record and run.
  local ahead = math.max(0, (tonumber(run_at) or 0) - tonumber(now))
  redis.call('EXPIRE', key, math.ceil(tonumber(retention) + ahead))
  if origin == 'celery' then
    local result, err = unpack(redis.call('HMGET', key, 'result', 'last_error'))
    for i = 1, #(fields or {}), 2 do
      if fields[i] == 'last_error' then err = fields[i + 1] end
    end
    local value = result or 'null'
    if status ~= 'succeeded' then
      local text = err or status
      local kind, message = string.match(text, '^([%a_][%w_]*): (.*)$')
      if not kind then kind, message = 'JobFailed', text end
      value = '{"exc_type": ' .. cjson.encode(kind) .. ', "exc_message": [' ..
        cjson.encode(message) .. '], "exc_module": "builtins"}'
    end
    celery_result(id, CELERY_STATES[status] or 'FAILURE', value, now_iso, retention)
  end
  return old
end

-- Restore: a held message goes back on its queue; its job waits again.
local function requeue_record(id, now)
  local key = K.job .. id
  local old, created = unpack(redis.call('HMGET', key, 'status', 'created_at'))
  if old ~= 'active' then return end
  redis.call('HSET', key, 'status', 'pending', 'updated_at', now)
  redis.call('HDEL', key, 'worker')
  move(id, old, 'pending', created)
end

local B64

local function b64decode(text)
  if not B64 then  -- built on first use: most calls never decode a body
    B64 = {}
    local chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
    for i = 1, 64 do B64[string.byte(chars, i)] = i - 1 end
  end
  local out, bits, nbits = {}, 0, 0
  for i = 1, #text do
    local v = B64[string.byte(text, i)]
    if v then
      bits = bits * 64 + v
      nbits = nbits + 6
      if nbits >= 8 then
        nbits = nbits - 8
        local byte = math.floor(bits / 2 ^ nbits)
        out[#out + 1] = string.char(byte)
        bits = bits - byte * 2 ^ nbits
      end
    end
  end
  return table.concat(out)
end

-- The payload of a Celery protocol-2 message ({"args": [...], "kwargs": {...}}), for a record
-- created at fetch; '{}' when the body cannot be read.
local function payload_of(msg)
  local body = msg.body
  if type(body) ~= 'string' then return '{}' end
  local props = msg.properties
  if type(props) == 'table' and props.body_encoding == 'base64' then body = b64decode(body) end
  local ok, decoded = pcall(cjson.decode, body)
  if not ok or type(decoded) ~= 'table' then return '{}' end
  local args, kwargs = decoded[1], decoded[2]
  -- cjson reads NaN and Infinity but refuses to write them: the payload is then left out.
  local ok_a, a = pcall(cjson.encode, args)
  local ok_k, k = pcall(cjson.encode, kwargs)
  if not ok_a or type(args) ~= 'table' or #args == 0 then a = '[]' end
  if not ok_k or type(kwargs) ~= 'table' or next(kwargs) == nil then k = '{}' end
  return '{"args": ' .. a .. ', "kwargs": ' .. k .. '}'
end

-- Fetch: start the job of a message taken off ``queue``. A task message without a record (a
-- producer that does not write records: a plain Celery app) gets one now, marked origin=celery
-- so its result is also stored where Celery's result backend reads it. A message with an ETA
-- waits in the worker until due: its job starts in the pool process (start.lua), when it
-- really starts.
local function start_message(msg, queue, now, hostname)
  local headers = msg.headers
  if type(headers) ~= 'table' or type(headers.id) ~= 'string' then return 'run' end
  local id, task = headers.id, headers.task
  local retries = tonumber(headers.retries) or 0
  local trackable = type(task) == 'string' and string.sub(task, 1, 7) ~= 'celery.'
  if truthy(headers.eta) then
    if trackable and redis.call('EXISTS', K.job .. id) == 0 then
      write_record(id, task, queue, 'scheduled', now, now, now, retries, payload_of(msg))
      redis.call('HSET', K.job .. id, 'origin', 'celery')
      move(id, nil, 'scheduled', now)
    end
    return 'run'
  end
  local once = truthy(headers[H.publish_once]) and not truthy(headers[H.deferred])
    and retries == 0
  local info = type(msg.properties) == 'table' and msg.properties.delivery_info
  local redelivered = truthy(headers.redelivered)
    or (type(info) == 'table' and truthy(info.redelivered))
  local verdict, old = start_record(id, retries + 1, once, redelivered, now, hostname)
  if old or not trackable then return verdict end
  write_record(id, task, queue, 'active', now, now, now, retries + 1, payload_of(msg))
  redis.call('HSET', K.job .. id, 'origin', 'celery', 'started_at', now, 'worker', hostname)
  move(id, nil, 'active', now)
  return 'run'
end

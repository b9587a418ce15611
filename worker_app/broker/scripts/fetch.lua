--! use records
-- The worker's one call: release acked deliveries (ending the jobs that succeeded), then take up
-- to ``slots`` messages off the queue lists and hold each (held hash and lease index) in the
-- same atomic step, starting its job. Nothing is ever taken off a list without being held.
--
-- KEYS (after the prelude's): per queue, its lists in priority order (``steps`` of them).
-- ARGV: now (the worker's clock, for job records), now as ISO text, worker name, retention seconds, number of queues, steps, slots,
--   number of acks; the queue names; per queue '1' to hold what is taken from it, '0' not (a
--   consumer without acks); per slot the queue order (1-based queue positions); per ack its
--   tag, job id and outcome: 'succeeded' (the job ends so), 'ended' (the task ended otherwise
--   with no failure recorded, e.g. Celery's Ignore or Reject: a record still active ends
--   failed), '' (its record was already moved on: a retry, a failure, a requeue), or
--   'started' (not a release: a pool process started the task; its tag joins K.running).
--   A release ends the run: the job's death count is deleted.
-- Returns: 1 if a take found every list empty (the worker may wait), else 0; then per message
--   taken: queue position, verdict ('held', 'taken' (not held), 'cancelled', 'duplicate',
--   'bad'), the item. A held message's tag is its envelope's; a bad item's is H.raw_tag and
--   the SHA-1 of its bytes.
--   'bad' items (not a message envelope) are held under a tag of their own until the worker
--   has dead-lettered them; 'cancelled' and 'duplicate' ones are dropped (their job is over).
--   A 'poison' message (its runs died H.poison_deaths times in a row) is held, not to be run:
--   the worker dead-letters it.
local now, now_iso, hostname, retention = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
-- Leases are scored by the server's clock, never a host's: a host whose clock is off, or a
-- fetch the network held back, cannot hold a message under a lease already expired.
local clock = redis.call('TIME')
local lease = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local nq, steps, slots = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local nacks = tonumber(ARGV[8])
local orders_at = 8 + 2 * nq  -- the orders follow this argument
local acks_at = orders_at + slots * nq + 1
local ENDED = 'Ended: the task ended without a result or a failure (Ignore or Reject)'

if nacks > 0 then
  local all, tags, raws, started = {}, {}, {}, {}
  for i = 0, nacks - 1 do
    local at = acks_at + 3 * i
    local tag, id, outcome = ARGV[at], ARGV[at + 1], ARGV[at + 2]
    if outcome == 'started' then
      started[#started + 1] = tag
    else
      all[#all + 1] = tag
      if string.sub(tag, 1, #H.raw_tag) == H.raw_tag then raws[#raws + 1] = tag
      else tags[#tags + 1] = tag end
      if id ~= '' then redis.call('DEL', K.deaths .. id) end
      if outcome == 'succeeded' then
        finish_record(id, 'succeeded', now, now_iso, retention, nil)
      elseif outcome == 'ended' and redis.call('HGET', K.job .. id, 'status') == 'active' then
        finish_record(id, 'failed', now, now_iso, retention, {'last_error', ENDED})
      end
    end
  end
  -- A start is marked only while its message is still held (it may have been released already).
  for _, tag in ipairs(started) do
    if redis.call('HEXISTS', K.held, tag) == 1 then redis.call('SADD', K.running, tag) end
  end
  if #all > 0 then
    redis.call('ZREM', K.held_index, unpack(all))
    redis.call('SREM', K.running, unpack(all))
  end
  if #tags > 0 then redis.call('HDEL', K.held, unpack(tags)) end
  if #raws > 0 then redis.call('HDEL', K.held_raw, unpack(raws)) end
end

-- The one rule of what a message envelope is (worker_app.broker.envelope says the same).
-- Strings are taken as bytes: text that is not valid UTF-8 does not make an envelope bad.
local function envelope(item)
  local ok, msg = pcall(cjson.decode, item)
  if not ok or type(msg) ~= 'table' then return nil end
  local props = msg.properties
  if type(props) ~= 'table' or type(props.delivery_info) ~= 'table' then return nil end
  if type(props.delivery_tag) ~= 'string' or props.delivery_tag == '' then return nil end
  return msg
end

local function hold_raw(list, item)
  local tag = H.raw_tag .. redis.sha1hex(item)
  redis.call('ZADD', K.held_index, lease, tag)
  redis.call('HSET', K.held_raw, tag, list .. '\n' .. item)
  return 'bad', tag
end

local function hold(list, queue, item, keep)
  if not keep then return 'taken', '' end
  local msg = envelope(item)
  if not msg then return hold_raw(list, item) end
  local tag = msg.properties.delivery_tag
  local verdict = start_message(msg, queue, now, hostname)
  if verdict ~= 'run' then return verdict, tag end
  local id = type(msg.headers) == 'table' and msg.headers.id
  if type(id) == 'string'
    and (tonumber(redis.call('GET', K.deaths .. id)) or 0) >= tonumber(H.poison_deaths) then
    verdict = 'poison'
  else
    verdict = 'held'
  end
  redis.call('ZADD', K.held_index, lease, tag)
  local exchange = msg.properties.delivery_info.exchange
  if type(exchange) ~= 'string' then exchange = '' end
  -- As kombu holds a message: [envelope, exchange, routing key]; the routing key is the queue
  -- it came from, so a restore puts it back there.
  redis.call('HSET', K.held, tag, '[' .. item .. ',' .. cjson.encode(exchange) .. ','
    .. cjson.encode(queue) .. ']')
  return verdict, tag
end

local out = {0}
local lmpop = (tonumber(redis.REDIS_VERSION_NUM) or 0) >= 0x070000
local owner = {}
for q = 1, nq do
  for p = 1, steps do owner[KEYS[NK + (q - 1) * steps + p]] = q end
end
for s = 0, slots - 1 do
  local lists = {}
  for i = 1, nq do
    local first = NK + (tonumber(ARGV[orders_at + s * nq + i]) - 1) * steps
    for p = 1, steps do lists[#lists + 1] = KEYS[first + p] end
  end
  local list, item
  if lmpop then
    local n = #lists
    lists[n + 1] = 'RIGHT'
    local popped = redis.call('LMPOP', n, unpack(lists))
    lists[n + 1] = nil
    if popped then list, item = popped[1], popped[2][1] end
  else
    for _, candidate in ipairs(lists) do
      item = redis.call('RPOP', candidate)
      if item then list = candidate break end
    end
  end
  if not item then
    -- Every list is empty: wake-up tokens left for them announce nothing any more.
    out[1] = 1
    local wakes = {}
    for i, l in ipairs(lists) do wakes[i] = K.wake .. l end
    redis.call('DEL', unpack(wakes))
    break
  end
  local q = owner[list]
  -- A script that fails half-way is not rolled back: whatever goes wrong with one message
  -- after it was taken, it is held raw (and dead-lettered), never dropped.
  local ok, verdict, tag = pcall(hold, list, ARGV[8 + q], item, ARGV[8 + nq + q] == '1')
  if not ok then verdict, tag = hold_raw(list, item) end
  out[#out + 1] = q
  out[#out + 1] = verdict
  out[#out + 1] = item
end
return out

--! use records
-- Cancel a job: a waiting one (pending, scheduled, retrying) ends cancelled at once and its
-- message is dropped when a worker takes it; an active one is flagged for its task to stop.
-- ARGV: id, now, now as ISO text, retention seconds, reason. Returns the status before.
local key = K.job .. ARGV[1]
local old = redis.call('HGET', key, 'status')
if old == 'pending' or old == 'scheduled' or old == 'retrying' then
  finish_record(ARGV[1], 'cancelled', ARGV[2], ARGV[3], ARGV[4], {'last_error', ARGV[5]})
elseif old == 'active' then
  redis.call('HSET', key, 'cancel_requested', ARGV[2])
end
return old or ''

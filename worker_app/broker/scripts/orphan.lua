--! use records
-- End a job whose message exists nowhere (no queue list, parked or held set had it), if its
-- record is still exactly as the search saw it: failed, with the reason. Returns 1 if ended.
-- ARGV: id, status seen, updated_at seen, now, now as ISO text, retention seconds, error text.
local key = K.job .. ARGV[1]
local status, updated = unpack(redis.call('HMGET', key, 'status', 'updated_at'))
if status ~= ARGV[2] or updated ~= ARGV[3] then return 0 end
finish_record(ARGV[1], 'failed', ARGV[4], ARGV[5], ARGV[6], {'last_error', ARGV[7]})
return 1

-- Keep the result (JSON) of a job that returned one in its record, if it has one.
-- ARGV: id, result.
local key = K.job .. ARGV[1]
if redis.call('EXISTS', key) == 1 then redis.call('HSET', key, 'result', ARGV[2]) end

-- Take a token from a task's global rate limit (GCRA: one theoretical arrival time per task).
-- KEYS (after the prelude's): the bucket. ARGV: now, seconds per token.
-- Returns '0' when a token was taken, else the seconds until one is due.
local bucket = KEYS[NK + 1]
local now, interval = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', bucket) or ARGV[1])
if tat < now then tat = now end
if tat > now then return tostring(tat - now) end
redis.call('SET', bucket, tostring(tat + interval), 'PX', math.ceil(interval * 1000) + 1000)
return '0'

-- Take (or keep) a per-key concurrency slot: drop lapsed leases, then lease a slot to the job
-- if it holds one already or fewer than the limit are taken.
-- KEYS (after the prelude's): the slot set. ARGV: now, job id, limit, lease expiry.
-- Returns 1 when the job holds a slot.
local slots = KEYS[NK + 1]
redis.call('ZREMRANGEBYSCORE', slots, '-inf', ARGV[1])
if redis.call('ZSCORE', slots, ARGV[2]) or redis.call('ZCARD', slots) < tonumber(ARGV[3]) then
  redis.call('ZADD', slots, ARGV[4], ARGV[2])
  redis.call('PEXPIREAT', slots, math.ceil(tonumber(ARGV[4]) * 1000))
  return 1
end
return 0

--! use records
-- Start, in the pool process, the job of a message that waited in its worker for its ETA, and
-- count how long it waited. ARGV: id, attempt, once ('1'), redelivered ('1'), now, worker name,
-- queue, waited seconds ('' unknown), its histogram bucket.
-- Returns 'run', 'cancelled' or 'duplicate' (see start_record).
if ARGV[8] ~= '' then
  local wait = K.wait .. ARGV[7]
  redis.call('HINCRBY', wait, ARGV[9], 1)
  redis.call('HINCRBYFLOAT', wait, 'sum', ARGV[8])
end
return (start_record(ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4] == '1', ARGV[5], ARGV[6]))

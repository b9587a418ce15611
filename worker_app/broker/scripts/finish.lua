--! use records
-- End a job (failed, cancelled, or succeeded outside the fetch) and expire its record.
-- ARGV: id, status, now, now as ISO text, retention seconds, then field/value pairs.
-- Returns the status before ('' when the job has no record).
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
return finish_record(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], fields)

--! use dlq
-- Remove a dead-letter entry, only if it is still the one the caller read (its failed_at as
-- '%.6f'; '' for any), so a job that failed again meanwhile keeps its new entry.
-- ARGV: id, expected failed_at. Returns 1 if removed.
local id, expected = ARGV[1], ARGV[2]
local raw = redis.call('GET', K.dlq_entry .. id)
if not raw then return 0 end
if expected ~= '' then
  local ok, e = pcall(cjson.decode, raw)
  if ok and string.format('%.6f', e['failed_at']) ~= expected then return 0 end
end
dlq_remove(id)
return 1

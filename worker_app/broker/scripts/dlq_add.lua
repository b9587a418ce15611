--! use dlq
-- Write a dead-letter entry (replacing one with the same id), then trim what is older than the
-- retention and what is beyond the size cap, counting the trimmed.
-- ARGV: id, entry JSON, failed_at, retention cutoff, max size, then its task, reason, queue and
-- fingerprint. Returns {trimmed by retention, trimmed by size}.
return dlq_write(ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]),
  {ARGV[6], ARGV[7], ARGV[8], ARGV[9]})

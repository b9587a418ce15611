-- Renew the leases of held messages, scored by the server's clock (never a host's: see
-- fetch.lua). A tag no longer held (acked or given back meanwhile) is not brought back (XX).
-- ARGV: the tags. Returns how many leases changed.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local changed = 0
for i = 1, #ARGV do
  changed = changed + redis.call('ZADD', K.held_index, 'XX', 'CH', now, ARGV[i])
end
return changed

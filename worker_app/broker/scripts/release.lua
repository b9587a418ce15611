-- Release parked messages that are due onto their queue lists (each member is
-- "<list>\n<message>"), leaving a wake-up token on a short list. Returns how many moved.
-- ARGV: now, most to move, wake-up cap.
local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local cap = tonumber(ARGV[3])
for _, member in ipairs(due) do
  local cut = string.find(member, '\n', 1, true)
  local list = string.sub(member, 1, cut - 1)
  redis.call('ZREM', K.delayed, member)
  if redis.call('LPUSH', list, string.sub(member, cut + 1)) <= cap then
    redis.call('LPUSH', K.wake .. list, '')
  end
end
return #due

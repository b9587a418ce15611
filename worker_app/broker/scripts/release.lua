-- Release parked messages that are due onto their queue lists (each member is
-- "<list>\n<message>"), leaving a wake-up token on a short list. Returns how many moved.
-- Due by the server's clock (one clock for every worker: one whose clock is ahead releases
-- nothing early). ARGV: most to move, wake-up cap.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now, 'LIMIT', 0, ARGV[1])
local cap = tonumber(ARGV[2])
for _, member in ipairs(due) do
  local cut = string.find(member, '\n', 1, true)
  local list = string.sub(member, 1, cut - 1)
  redis.call('ZREM', K.delayed, member)
  if redis.call('LPUSH', list, string.sub(member, cut + 1)) <= cap then
    redis.call('LPUSH', K.wake .. list, '')
  end
end
return #due

-- After ratelimit_rate.lua: take a token, or say how long to come back after.
--
-- ARGV[3..5]: burst (seconds of tokens), longest wait (s), the bucket's TTL (s).
-- Returns {1, wait}: go after sleeping wait seconds (a token is reserved), or
-- {0, wait}: the wait is too long, no token taken.
local burst = math.max(1, full * tonumber(ARGV[3]))
local max_wait = tonumber(ARGV[4])
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens < 1 then
  wait = (1 - tokens) / rate
  if wait > max_wait then
    redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
    redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
    return {0, tostring(wait)}
  end
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return {1, tostring(wait)}

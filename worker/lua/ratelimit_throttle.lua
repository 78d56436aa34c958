-- After ratelimit_rate.lua: Stripe answered 429, so slow down (multiplicative
-- decrease, never below the lowest share of the full rate) and empty the bucket.
--
-- ARGV[3..5]: the lowest share of the full rate, the decrease factor, the TTL (s).
-- Returns the new rate.
local lowest = full * tonumber(ARGV[3])
local slowed = math.max(lowest, rate * tonumber(ARGV[4]))
local tokens = math.min(0, tonumber(state[1]) or 0)
redis.call('HSET', KEYS[1], 'floor', tostring(slowed), 'throttled_at', tostring(now),
           'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return tostring(slowed)

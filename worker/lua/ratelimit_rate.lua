-- Shared by the rate-limit scripts (each is this prelude, then its own body): the
-- current rate, recovering linearly since the last throttle, by Redis's clock.
--
-- KEYS: the bucket (a hash: tokens, ts, floor, throttled_at).
-- ARGV: the full rate (calls/s), the recovery time (s), then the script's own.
-- Defines: now, full, recovery, state (the bucket's fields), rate.
local function current_rate(state, now, full, recovery)
  local floor_rate = tonumber(state[3])
  if not floor_rate then return full end
  local since = now - tonumber(state[4])
  return math.min(full, floor_rate + full * since / recovery)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local full = tonumber(ARGV[1])
local recovery = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'floor', 'throttled_at')
local rate = current_rate(state, now, full, recovery)

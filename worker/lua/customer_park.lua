-- Keep the customer locked for one job's retry: its request got no final answer
-- and Stripe may still apply it, so no other job may write first.
--
-- KEYS: the customer's lock.
-- ARGV: the lock's token, the job's id, the parked lock's lifetime in milliseconds.
-- Only the token's holder parks; the job's retry takes it over (customer_enter.lua).
-- Returns 1 if parked, 0 if the token no longer held the lock.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], 'parked:' .. ARGV[2], 'PX', ARGV[3])
return 1

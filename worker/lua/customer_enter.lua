-- Take the customer's lock and read its newest applied request: one round trip.
--
-- KEYS: the customer's lock, its newest-request record (a hash).
-- ARGV: the lock's token, the lock's lifetime in milliseconds.
-- Returns {0} if another job holds the lock, else {1, requested_at, job_id}
-- (both nil when no request was applied yet).
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0}
end
local newest = redis.call('HMGET', KEYS[2], 'requested_at', 'job_id')
return {1, newest[1], newest[2]}

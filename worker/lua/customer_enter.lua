-- Take the customer's lock and read its newest applied request: one round trip.
--
-- KEYS: the customer's lock, its newest-request record (a hash).
-- ARGV: the lock's token, the lock's lifetime in milliseconds, the job's id.
-- A lock parked for this job (customer_park.lua) is taken over with the token.
-- Returns {0} if another job holds the lock, else {1, requested_at, job_id}
-- (both nil when no request was applied yet).
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if ARGV[3] == '' or redis.call('GET', KEYS[1]) ~= 'parked:' .. ARGV[3] then
    return {0}
  end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
local newest = redis.call('HMGET', KEYS[2], 'requested_at', 'job_id')
return {1, newest[1], newest[2]}

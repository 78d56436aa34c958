-- Record the request just applied (if any), then release the lock if this
-- token still holds it (it may have expired and moved on): one round trip.
--
-- KEYS: the customer's lock, its newest-request record (a hash).
-- ARGV: the lock's token, the applied request's requested_at ('' for none),
--       its job id, the record's lifetime in seconds, the card it set.
-- The record's applied_at is Redis's clock, so a batch-api migration can tell
-- which customers live jobs wrote while its batch job ran.
-- Returns 1.
if ARGV[2] ~= '' then
  local now = redis.call('TIME')
  redis.call('HSET', KEYS[2], 'requested_at', ARGV[2], 'job_id', ARGV[3],
    'source', ARGV[5] or '', 'applied_at', now[1] .. '.' .. string.format('%06d', now[2]))
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1

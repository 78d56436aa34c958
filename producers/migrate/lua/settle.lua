-- After Stripe ran a batch job: settle one customer's row against live jobs.
-- Newest request wins: a batch line ran without the customer's lock, so a live
-- job may have written the customer while the batch job ran.
--
-- KEYS: the customer's lock, its newest-request record (cards/customer_keys.py).
-- ARGV: the row's requested_at, its job id, its card, the batch job's start
--       (Redis time), the record's lifetime in seconds.
-- Returns {'busy'}: a live job holds the customer now (send the row through the
-- ordering guard); {'newer', requested_at, job_id, source}: a newer request was
-- applied (re-apply it); {'resend'}: an older live job wrote the customer while
-- the batch ran (send the row through the guard); {'recorded'}: the row is now
-- the customer's newest request.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'busy'}
end
local newest = redis.call('HMGET', KEYS[2], 'requested_at', 'job_id', 'source', 'applied_at')
if newest[1] and newest[2] ~= ARGV[2] then
  local t, row_t = tonumber(newest[1]), tonumber(ARGV[1])
  if t > row_t or (t == row_t and newest[2] > ARGV[2]) then
    return {'newer', newest[1], newest[2], newest[3] or ''}
  end
  if tonumber(newest[4] or '0') >= tonumber(ARGV[4]) then
    return {'resend'}
  end
end
local now = redis.call('TIME')
redis.call('HSET', KEYS[2], 'requested_at', ARGV[1], 'job_id', ARGV[2], 'source', ARGV[3],
  'applied_at', now[1] .. '.' .. string.format('%06d', now[2]))
redis.call('EXPIRE', KEYS[2], ARGV[5])
return {'recorded'}

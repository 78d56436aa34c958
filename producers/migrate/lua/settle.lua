-- After Stripe ran a batch job: settle customers' rows against live jobs.
-- Newest request wins: a batch line ran without the customer's lock, so a live
-- job may have written the customer while the batch job ran.
--
-- KEYS: for each customer, its lock and its newest-request record
--       (cards/customer_keys.py).
-- ARGV: the batch job's start (Redis time), the record's lifetime in seconds,
--       then for each customer: the row's requested_at, its job id, its card.
-- Returns, for each customer in order, one of:
--   {'busy'}: a live job holds the customer now (send the row through the
--     ordering guard);
--   {'newer', requested_at, job_id, source}: a newer request was applied
--     (apply it again);
--   {'resend'}: an older live job wrote the customer while the batch ran (send
--     the row through the guard);
--   {'recorded'}: the row is now the customer's newest request.
local since, ttl = tonumber(ARGV[1]), ARGV[2]
local now = redis.call('TIME')
local applied_at = now[1] .. '.' .. string.format('%06d', now[2])
local answers = {}
for i = 1, #KEYS / 2 do
  local lock, record = KEYS[2 * i - 1], KEYS[2 * i]
  local row_t, row_job, row_source = ARGV[3 * i], ARGV[3 * i + 1], ARGV[3 * i + 2]
  local answer = nil
  if redis.call('EXISTS', lock) == 1 then
    answer = {'busy'}
  else
    local newest = redis.call('HMGET', record, 'requested_at', 'job_id', 'source', 'applied_at')
    if newest[1] and newest[2] ~= row_job then
      local t, rt = tonumber(newest[1]), tonumber(row_t)
      if t > rt or (t == rt and newest[2] > row_job) then
        answer = {'newer', newest[1], newest[2], newest[3] or ''}
      elseif tonumber(newest[4] or '0') >= since then
        answer = {'resend'}
      end
    end
  end
  if not answer then
    redis.call('HSET', record, 'requested_at', row_t, 'job_id', row_job, 'source', row_source,
      'applied_at', applied_at)
    redis.call('EXPIRE', record, ttl)
    answer = {'recorded'}
  end
  answers[i] = answer
end
return answers

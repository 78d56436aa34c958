-- A queue list got a message: leave one wake-up token beside it, unless one is
-- there already (one waiting worker wakes per message, not all of them).
--
-- KEYS: the queue list, its token list.
-- Returns 1 if a token was pushed, else 0.
if redis.call('LLEN', KEYS[1]) > 0 and redis.call('LLEN', KEYS[2]) == 0 then
  redis.call('LPUSH', KEYS[2], '1')
  return 1
end
return 0

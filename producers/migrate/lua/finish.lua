-- Mark lines finished, each counted once: a line marked twice adds nothing.
-- KEYS: the record (hash), its lines (bitmap).
-- ARGV: ttl, now, then (line, outcome) pairs.
-- Returns how many lines were not finished before.
local fresh = 0
for i = 3, #ARGV, 2 do
  if redis.call('SETBIT', KEYS[2], ARGV[i], 1) == 0 then
    redis.call('HINCRBY', KEYS[1], ARGV[i + 1], 1)
    fresh = fresh + 1
  end
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return fresh

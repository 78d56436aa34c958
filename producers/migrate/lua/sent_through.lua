-- Raise the record's sent_through to a line, never lower it.
-- KEYS: the record (hash). ARGV: line, now.
local current = tonumber(redis.call('HGET', KEYS[1], 'sent_through') or '0')
if tonumber(ARGV[1]) > current then
  redis.call('HSET', KEYS[1], 'sent_through', ARGV[1], 'updated_at', ARGV[2])
end
return 1

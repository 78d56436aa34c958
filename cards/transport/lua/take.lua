-- Take the first message of the first non-empty queue and, in the same atomic
-- step, record it in `unacked` the way kombu's QoS.append does: the stored value
-- is [message, exchange, routing_key] as JSON, with the raw message text embedded
-- unchanged. Redis runs a script whole or not at all, so a message is always in
-- its queue or in `unacked`, never in neither.
--
-- KEYS: unacked hash, unacked index, then n queue lists, then their n token lists.
-- ARGV: the score (the worker's time()), n, then n flags: "1" to record the message
--       taken from that queue (a consumer that acks), "0" not to (no_ack).
-- Returns false, or {index of the queue (1-based), message, 1 if recorded else 0,
-- 1 if that queue still holds a message (and so a token) else 0}.
-- Tokens: dropped when the queue is empty; one left while it is not, so that the
-- next idle worker takes the rest of a backlog at once.
-- A message without a delivery tag, exchange and routing key is returned
-- unrecorded; QoS.append then handles it as kombu always did.
local n = tonumber(ARGV[2])
local function json_text(value)
  if type(value) == 'string' then return cjson.encode(value) end
  if value == cjson.null then return 'null' end
  return nil
end
for i = 1, n do
  local queue = KEYS[2 + i]
  local item = redis.call('RPOP', queue)
  if item then
    local tokens = KEYS[2 + n + i]
    local left = 0
    if redis.call('LLEN', queue) == 0 then
      redis.call('DEL', tokens)
    else
      left = 1
      if redis.call('LLEN', tokens) == 0 then redis.call('LPUSH', tokens, '1') end
    end
    if ARGV[2 + i] ~= '1' then return {i, item, 0, left} end
    local ok, message = pcall(cjson.decode, item)
    if not ok or type(message) ~= 'table' or type(message.properties) ~= 'table' then
      return {i, item, 0, left}
    end
    local tag = message.properties.delivery_tag
    local info = message.properties.delivery_info
    if type(tag) ~= 'string' or type(info) ~= 'table' then return {i, item, 0, left} end
    local exchange, routing_key = json_text(info.exchange), json_text(info.routing_key)
    if exchange == nil or routing_key == nil then return {i, item, 0, left} end
    redis.call('ZADD', KEYS[2], ARGV[1], tag)
    redis.call('HSET', KEYS[1], tag, '[' .. item .. ',' .. exchange .. ',' .. routing_key .. ']')
    return {i, item, 1, left}
  end
end
for i = 1, n do
  redis.call('DEL', KEYS[2 + n + i])
end
return false

-- Forget an acknowledged message, as kombu's QoS.ack does with a MULTI/EXEC
-- pipeline (ZREM from the index, HDEL from unacked), in one command.
--
-- KEYS: unacked hash, unacked index. ARGV: the delivery tag.
-- Returns the number of records removed from unacked (0 or 1).
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('HDEL', KEYS[1], ARGV[1])

"""Our Redis broker transport: kombu's, with two delivery bugs fixed (issue 5, R1 and R2).

``celeryconfig.broker_transport`` names :class:`Transport`, so every Celery app
this project builds (workers and producers, see :mod:`cards.messaging`) uses it
for ``redis://`` and ``rediss://`` broker URLs. Everything else is kombu's.

**R2: a worker exits when Redis restarts.** On a lost connection Celery
(``celery/worker/consumer/consumer.py:476-487``) calls ``connection.collect()`` and
then ``connection.close()``. Inside ``collect()`` every channel with a ``BRPOP`` in
flight fails to close (``Channel.close`` reads that reply first,
``kombu/transport/redis.py:1894``, and Redis is gone), and the first failure stops
``Transport.close_connection`` (``kombu/transport/virtual/base.py:990``) from
closing the rest; ``collect()`` then detaches the transport
(``kombu/connection.py:429``: ``transport.client = None``). ``close()`` closes the
default channel again: it drops its pools, and ``restore_unacked_once``
(``kombu/transport/virtual/base.py:806``) asks for a new Redis client, so
``_get_pool`` → ``_connparams`` reads ``self.connection.client.hostname``
(``kombu/transport/redis.py:1959``) on ``None``: ``AttributeError``. Only
connection and channel errors are ignored on that path
(``kombu/connection.py:405``, ``kombu.common.ignore_errors``), so Celery logs
"Unrecoverable error" and the worker exits. Fix: a channel whose transport was
detached raises :class:`redis.exceptions.ConnectionError` instead (its connection
*is* gone), which every cleanup path already ignores, and Celery reconnects with a
new transport. The channel's unacknowledged messages stay in Redis' ``unacked``
hash and come back after the visibility timeout, as after a crash.

**R1: a message is lost when its worker dies right after taking it.** kombu pops
a message with ``BRPOP`` (``_brpop_start``/``_brpop_read``,
``kombu/transport/redis.py:1459-1491``) and only then, in a second command, records
it in ``unacked`` (``QoS.append``, ``kombu/transport/redis.py:476``, called from
the delivery callback, ``kombu/transport/virtual/base.py:648``). A worker
SIGKILLed between the two, or a Redis that goes away between them, loses the
message: at most once in that window (celery/celery#4354, celery/kombu#305). Fix:
workers never pop a message with ``BRPOP`` any more. Producers push, with each
message and in the same ``MULTI``, a *wake-up token* onto a list beside its queue
(:data:`WAKE_KEY_PREFIX`); workers ``BRPOP`` the tokens, and then take the message
with a Lua script (:data:`POP_SCRIPT`) that pops it and records it in
``unacked``/``unacked_index`` in one atomic step, exactly as ``QoS.append`` would
have. Redis runs a script whole or not at all, and its append-only file logs it
as one unit, so a message is always in its queue or in ``unacked``, never in
neither. A lost token (a worker killed after popping one) loses nothing: an idle
worker's ``BRPOP`` times out every ``brpop_timeout`` (1 s) and runs the script
anyway, so an untokened message (also one sent by a producer without this
transport) waits at most that long, and the script leaves a token behind while
its queue is not empty. Spurious tokens only cost a wake-up: the script drops a
queue's tokens whenever it empties the queue.

Happy-path cost: the worker still makes two round trips per message (``BRPOP``,
then the script instead of ``QoS.append``'s pipeline); the producer still makes
one (a ``MULTI`` of two ``LPUSH``es instead of one ``LPUSH``).

Targets kombu 5.7 with redis-py >= 6.1 (the versions in ``uv.lock``). It replaces
private kombu methods, so :func:`check_kombu_internals` runs at import and fails
loudly, naming what changed, if kombu's version or those methods are not what this
module was written against; ``tests/integration/test_transport.py`` covers both fixes.

Parameters:
    WAKE_KEY_PREFIX: the wake-up token list of a queue's Redis list ``K`` is
        ``WAKE_KEY_PREFIX + K`` (one list per queue and priority step).
    WAKE_TOKEN: what a token holds (its value is never read).
    SUPPORTED_KOMBU: the kombu release series (major, minor) this module was
        written and tested against.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from collections.abc import Sequence
from queue import Empty
from time import monotonic, time
from typing import Any

import redis
from kombu.transport import redis as _kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

__all__ = [
    "POP_SCRIPT",
    "SUPPORTED_KOMBU",
    "WAKE_KEY_PREFIX",
    "Channel",
    "QoS",
    "Transport",
    "check_kombu_internals",
    "wake_key",
]

WAKE_KEY_PREFIX = "_cards.wake."
WAKE_TOKEN = "1"  # noqa: S105 - not a secret
SUPPORTED_KOMBU = (5, 7)

#: The typing stubs cover kombu's public API only; this module uses the private
#: methods of its Redis channel (checked at import by check_kombu_internals).
kombu_redis: Any = _kombu_redis

#: Pop the first message of the first non-empty queue and, atomically, record it
#: in ``unacked`` the way ``kombu.transport.redis.QoS.append`` does (the stored
#: value is ``[message, exchange, routing_key]`` as JSON; the raw message text is
#: embedded unchanged, never re-encoded).
#:
#: KEYS: unacked hash, unacked index, then n queue lists, then their n token lists.
#: ARGV: the score (the worker's ``time()``), n, then n flags: "1" to record the
#: message taken from that queue (a consumer that acks), "0" not to.
#: Returns false, or {index of the queue (1-based), message, 1 if recorded else 0}.
#: Tokens: dropped when the queue is empty; one left while it is not, so that
#: messages without a token (lost, or from a producer without this transport) do
#: not wait for a ``BRPOP`` timeout each.
#: A message without a delivery tag, exchange and routing key is returned
#: unrecorded; ``QoS.append`` then handles it as kombu always did.
POP_SCRIPT = """
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
    if redis.call('LLEN', queue) == 0 then
      redis.call('DEL', tokens)
    elseif redis.call('LLEN', tokens) == 0 then
      redis.call('LPUSH', tokens, '1')
    end
    if ARGV[2 + i] ~= '1' then return {i, item, 0} end
    local ok, message = pcall(cjson.decode, item)
    if not ok or type(message) ~= 'table' or type(message.properties) ~= 'table' then
      return {i, item, 0}
    end
    local tag = message.properties.delivery_tag
    local info = message.properties.delivery_info
    if type(tag) ~= 'string' or type(info) ~= 'table' then return {i, item, 0} end
    local exchange, routing_key = json_text(info.exchange), json_text(info.routing_key)
    if exchange == nil or routing_key == nil then return {i, item, 0} end
    redis.call('ZADD', KEYS[2], ARGV[1], tag)
    redis.call('HSET', KEYS[1], tag, '[' .. item .. ',' .. exchange .. ',' .. routing_key .. ']')
    return {i, item, 1}
  end
end
for i = 1, n do
  redis.call('DEL', KEYS[2 + n + i])
end
return false
"""

#: kombu methods this module replaces or relies on, with the parameters it expects.
_EXPECTED_SIGNATURES: dict[str, tuple[str, ...]] = {
    "Channel._brpop_start": ("self", "timeout"),
    "Channel._brpop_read": ("self", "options"),
    "Channel._put": ("self", "queue", "message", "kwargs"),
    "Channel._purge": ("self", "queue"),
    "Channel._do_restore_message": (
        "self",
        "payload",
        "exchange",
        "routing_key",
        "pipe",
        "leftmost",
    ),
    "Channel._connparams": ("self", "asynchronous"),
    "Channel._flush_brpop_reauth": ("self",),
    "Channel._q_for_pri": ("self", "queue", "pri"),
    "Channel._get_message_priority": ("self", "message", "reverse"),
    "Channel.basic_consume": ("self", "queue", "args", "kwargs"),
    "Channel.conn_or_acquire": ("self", "client"),
    "QoS.append": ("self", "message", "delivery_tag"),
}


def check_kombu_internals() -> None:
    """Fail loudly if kombu is not the release this module patches, or its private
    Redis channel methods changed shape; review this module before adapting it."""
    installed = importlib.metadata.version("kombu")
    version = tuple(int(part) for part in installed.split(".")[:2])
    if version != SUPPORTED_KOMBU:
        raise RuntimeError(
            f"cards.transport was written for kombu {SUPPORTED_KOMBU[0]}.{SUPPORTED_KOMBU[1]}.x, "
            f"found {installed}: check that BRPOP is still followed by QoS.append "
            "and that Channel.close still reaches _connparams after collect(), then update "
            "SUPPORTED_KOMBU"
        )
    for name, expected in _EXPECTED_SIGNATURES.items():
        owner, attr = name.split(".")
        function = getattr(getattr(kombu_redis, owner), attr, None)
        if function is None:
            raise RuntimeError(f"cards.transport: kombu.transport.redis.{name} is gone")
        found = tuple(inspect.signature(function).parameters)
        if found != expected:
            raise RuntimeError(
                f"cards.transport: kombu.transport.redis.{name} changed: {found} != {expected}"
            )
    for attr in ("_in_poll", "_brpop_sent_at", "_closing", "unacked_key", "unacked_index_key"):
        if not hasattr(kombu_redis.Channel, attr):
            raise RuntimeError(f"cards.transport: kombu.transport.redis.Channel.{attr} is gone")


check_kombu_internals()


def wake_key(queue_key: str) -> str:
    """The token list beside the Redis list ``queue_key`` (a queue at one priority)."""
    return WAKE_KEY_PREFIX + queue_key


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    """kombu's QoS, minus the ``unacked`` write for messages the pop script recorded."""

    def append(self, message: Any, delivery_tag: str) -> None:
        recorded: set[str] = self.channel._recorded_by_pop
        if delivery_tag in recorded:
            recorded.discard(delivery_tag)
            # In-memory bookkeeping only (prefetch count, restore at shutdown).
            virtual.QoS.append(self, message, delivery_tag)
            return
        super().append(message, delivery_tag)


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    """kombu's Redis channel with the atomic pop and the detached-transport guard."""

    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Set before kombu's __init__, which already talks to Redis.
        self._recorded_by_pop: set[str] = set()
        self._no_ack_queues: set[str] = set()
        self._pop_keys: list[tuple[str, str]] = []
        super().__init__(*args, **kwargs)
        if self.global_keyprefix:
            raise RuntimeError("cards.transport does not support global_keyprefix")
        self._pop_script = self.client.register_script(POP_SCRIPT)

    # ------------------------------------------------------------------ R2

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport is None or transport.client is None:
            # collect() detached the transport: the connection is gone. A
            # connection error is what every caller (close, ack, restore)
            # already expects when Redis is unreachable.
            raise redis.exceptions.ConnectionError(
                "the broker connection of this channel was closed"
            )
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)
        return params

    # ------------------------------------------------------------------ R1, producer side

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        """Push the message and its wake-up token in one ``MULTI`` (one round trip)."""
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        publish_batch = kwargs.get("_publish_batch")
        if publish_batch is not None:
            super()._put(queue, message, **kwargs)  # adds the message's LPUSH to the batch
            publish_batch.add("lpush", wake_key(key), WAKE_TOKEN)
            return
        with self.conn_or_acquire() as client, client.pipeline() as pipe:
            pipe.lpush(key, dumps(message))
            pipe.lpush(wake_key(key), WAKE_TOKEN)
            if self._expires and queue in self._expires:
                for pri in self.priority_steps:
                    pipe.pexpire(self._q_for_pri(queue, pri), self._expires[queue])
            pipe.execute()

    def _do_restore_message(
        self,
        payload: dict[str, Any],
        exchange: str,
        routing_key: str,
        pipe: Any,
        leftmost: bool = False,
    ) -> None:
        """Requeue as kombu does, with a token, so that a waiting worker wakes up."""
        super()._do_restore_message(payload, exchange, routing_key, pipe, leftmost)
        try:
            pri = self._get_message_priority(payload, reverse=False)
            for queue in self._lookup(exchange, routing_key):
                pipe.lpush(wake_key(self._q_for_pri(queue, pri)), WAKE_TOKEN)
        except self.connection_errors:
            raise
        except Exception:  # noqa: S110 - kombu logged it; without a token it still comes back
            pass

    def _purge(self, queue: str) -> int:
        count: int = super()._purge(queue)
        with self.conn_or_acquire() as client:
            client.delete(*(wake_key(self._q_for_pri(queue, p)) for p in self.priority_steps))
        return count

    # ------------------------------------------------------------------ R1, worker side

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        # A no_ack consumer never calls QoS.append: the script must not record its
        # messages, or nothing would ever remove them from ``unacked``.
        no_ack = kwargs.get("no_ack", args[0] if args else False)
        if no_ack:
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
        return super().basic_consume(queue, *args, **kwargs)

    def _brpop_start(self, timeout: float | None = None) -> None:
        """``BRPOP`` the active queues' token lists (kombu: the queues themselves)."""
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        # Same order as kombu's BRPOP keys: by priority step, then queue cycle.
        self._pop_keys = [
            (queue, self._q_for_pri(queue, pri)) for pri in self.priority_steps for queue in queues
        ]
        keys = [wake_key(key) for _, key in self._pop_keys]
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        self.client.connection.send_command("BRPOP", *keys, timeout or 0)

    def _brpop_read(self, **options: Any) -> bool:
        """Read the ``BRPOP`` reply (a token, or nothing after the timeout), then take
        the next message with the pop script: after a timeout it finds messages
        whose token was lost."""
        try:
            try:
                self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                # As kombu: disconnect so that the next poll reconnects.
                self.client.connection.disconnect()
                raise
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()
        if self._closing:
            # Channel.close reads the pending reply; taking a message now would
            # only move it to ``unacked`` for nobody.
            raise Empty()
        return self._pop_and_deliver(self._pop_keys)

    def _pop_and_deliver(self, pop_keys: Sequence[tuple[str, str]]) -> bool:
        if not pop_keys:
            raise Empty()
        record = self.ack_emulation
        flags = [
            "0" if not record or queue in self._no_ack_queues else "1" for queue, _ in pop_keys
        ]
        keys = [self.unacked_key, self.unacked_index_key]
        keys += [key for _, key in pop_keys] + [wake_key(key) for _, key in pop_keys]
        with self.conn_or_acquire() as client:
            reply = self._pop_script(
                keys=keys, args=[repr(time()), len(pop_keys), *flags], client=client
            )
        if not reply:
            raise Empty()
        index, item, recorded = reply
        queue = pop_keys[int(index) - 1][0]
        payload = loads(bytes_to_str(item))
        tag = payload["properties"]["delivery_tag"] if int(recorded) else None
        if tag is not None:
            self._recorded_by_pop.add(tag)  # QoS.append, called by _deliver, skips its write
        self._queue_cycle.rotate(queue)
        try:
            self.connection._deliver(payload, queue)
        finally:
            if tag is not None:
                self._recorded_by_pop.discard(tag)
        return True


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel

    def __init__(self, client: Any, **kwargs: Any) -> None:
        if getattr(client, "alt", None):
            # kombu's failover (Connection.switch) re-reads the transport from the
            # URL scheme and would silently drop this one.
            raise RuntimeError("cards.transport does not support failover broker URLs")
        super().__init__(client, **kwargs)

"""kombu's Redis channel, QoS and transports, consuming without ever losing a message.

Producers are kombu's, unchanged (one ``LPUSH`` per message). A worker's channel
takes a message only with the take script (``lua/take.lua``), which moves it from
its queue into ``unacked`` in one atomic step, so at every instant a message is in
its queue or in ``unacked``. The event loop blocks on a wake-up token list beside
each queue list (:func:`wake_key`), fed by a :class:`QueueWatcher` and by the take
script; without them the 1 s ``BRPOP`` timeout still runs the script. A channel
whose transport Celery detached raises a connection error, so the worker reconnects.
How and why: ``docs/transport.md``. Needs Redis >= 6.2 (``BLMOVE``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from queue import Empty
from time import monotonic, time
from typing import Any

import redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from cards.lua_scripts import read_lua
from cards.transport.kombu_check import check_kombu_internals, kombu_redis
from cards.transport.queue_watcher import QueueWatcher

__all__ = [
    "ACK_SCRIPT",
    "TAKE_SCRIPT",
    "WAKE_KEY_PREFIX",
    "WAKE_SCRIPT",
    "Channel",
    "QoS",
    "SentinelChannel",
    "SentinelTransport",
    "Transport",
    "wake_key",
]

WAKE_KEY_PREFIX = "_cards.wake."
#: The ``BRPOP`` timeout while the watcher rests because the last take left a token: if
#: another worker took that token and emptied the queue, this is how late a new message
#: can be seen before the watcher is armed again.
RESTING_BRPOP_TIMEOUT = 0.1

#: Takes a message into ``unacked`` atomically (see the file's header).
TAKE_SCRIPT = read_lua("cards.transport", "take.lua")
#: Leaves one wake-up token beside a queue list that holds a message.
WAKE_SCRIPT = read_lua("cards.transport", "wake.lua")
#: Forgets an acknowledged message (kombu's two-command transaction as one script).
ACK_SCRIPT = read_lua("cards.transport", "ack.lua")

check_kombu_internals()


def wake_key(queue_key: str) -> str:
    """The token list beside the Redis list ``queue_key`` (a queue at one priority)."""
    return WAKE_KEY_PREFIX + queue_key


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    """kombu's QoS, minus the ``unacked`` write for messages the take script recorded,
    and acknowledging with one script call instead of a MULTI/EXEC pipeline."""

    def ack(self, delivery_tag: str) -> None:
        with self.channel.conn_or_acquire() as client:
            self.channel._ack_script(
                keys=[self.unacked_key, self.unacked_index_key], args=[delivery_tag], client=client
            )
        virtual.QoS.ack(self, delivery_tag)

    def append(self, message: Any, delivery_tag: str) -> None:
        recorded: set[str] = self.channel._recorded_by_take
        if delivery_tag in recorded:
            recorded.discard(delivery_tag)
            # In-memory bookkeeping only (prefetch count, restore at shutdown).
            virtual.QoS.append(self, message, delivery_tag)
            return
        super().append(message, delivery_tag)


class ReliableConsuming:
    """What our channels change in kombu's Redis channel (mixed into both kinds).

    Transport option ``queue_watcher`` (default true): false runs no watcher, so a
    message whose producer pushed no token waits for the 1 s ``BRPOP`` timeout.
    """

    queue_watcher = True

    # Set by kombu's Channel; declared here for the type checker.
    _in_poll: Any
    _brpop_sent_at: float | None
    _closing: bool
    _queue_cycle: Any
    active_queues: Any
    brpop_timeout: float
    priority_steps: Any
    ack_emulation: bool
    unacked_key: str
    unacked_index_key: str
    connection: Any
    connection_errors: tuple[type[BaseException], ...]
    client: Any
    global_keyprefix: str
    max_connections: int | None
    _sentinel_manager: Any
    pool: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Set before kombu's __init__, which already talks to Redis.
        self._recorded_by_take: set[str] = set()
        self._no_ack_queues: set[str] = set()
        self._take_keys: list[tuple[str, str]] = []
        self._watcher: QueueWatcher | None = None
        self._shared_client: redis.Redis | None = None
        #: The last take left a message (so a token) in its queue: the next poll
        #: needs no watcher (see _brpop_start).
        self._token_left = False
        super().__init__(*args, **kwargs)
        if self.global_keyprefix:
            raise RuntimeError("cards.transport does not support global_keyprefix")
        self._take_script = self.client.register_script(TAKE_SCRIPT)
        self._wake_script = self.client.register_script(WAKE_SCRIPT)
        self._ack_script = self.client.register_script(ACK_SCRIPT)

    # ------------------------------------------------------------------ reconnects

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport is None or transport.client is None:
            # collect() detached the transport: the connection is gone. A
            # connection error is what every caller (close, ack, restore)
            # already expects when Redis is unreachable.
            raise redis.exceptions.ConnectionError(
                "the broker connection of this channel was closed"
            )
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]
        return params

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """kombu builds a new ``redis.Redis`` for every publish, ack and take (a
        tenth of a live worker's CPU); one client per connection pool serves them
        all (commands take a pool connection each, so threads may share it)."""
        if client:
            yield client
            return
        pool = self.pool
        shared = self._shared_client
        if shared is None or shared.connection_pool is not pool:
            shared = self._shared_client = self._create_client()  # type: ignore[attr-defined]
        yield shared

    def close(self) -> None:
        # First: on a lost connection kombu's close() raises (reading the BRPOP in
        # flight) before it reaches _disconnect_pools, and the watcher would live on.
        self._stop_watcher()
        super().close()  # type: ignore[misc]

    def _disconnect_pools(self) -> None:
        self._stop_watcher()
        super()._disconnect_pools()  # type: ignore[misc]

    def _stop_watcher(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()

    # ------------------------------------------------------------------ waking up

    def _start_watcher(self) -> QueueWatcher | None:
        """The watcher, started on first use with a connection pool of its own."""
        if self._watcher is None and self.queue_watcher and not self._closing:
            # kombu's pool factory, without the connection limit (the watcher holds
            # one connection per list) and keeping the channel's own Sentinel manager.
            limit, manager = self.max_connections, self._sentinel_manager
            self.max_connections = None
            try:
                pool = self._get_pool()  # type: ignore[attr-defined]
            except self.connection_errors:
                return None  # the event loop reconnects; the next poll tries again
            finally:
                self.max_connections = limit
                watcher_manager, self._sentinel_manager = self._sentinel_manager, manager
            self._watcher = QueueWatcher(
                pool,
                self._wake,
                timeout=self.brpop_timeout,
                on_stop=getattr(watcher_manager, "close", None),
            )
        return self._watcher

    def _wake(self, client: redis.Redis, queue_key: str) -> None:
        self._wake_script(keys=[queue_key, wake_key(queue_key)], client=client)

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        # A no_ack consumer never calls QoS.append: the script must not record its
        # messages, or nothing would ever remove them from ``unacked``.
        no_ack = kwargs.get("no_ack", args[0] if args else False)
        if no_ack:
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
        return super().basic_consume(queue, *args, **kwargs)  # type: ignore[misc]

    def _basic_cancel(self, consumer_tag: str) -> Any:
        # The last consumer gone (a broadcast's replies collected, say): nothing is left
        # to wake, so the watcher lets its lists go instead of holding a connection
        # blocked on each for as long as the channel lives. A new consumer's first poll
        # watches again.
        answer = super()._basic_cancel(consumer_tag)  # type: ignore[misc]
        if self._watcher is not None and not self.active_queues:
            self._watcher.watch(())
        return answer

    def _brpop_start(self, timeout: float | None = None) -> None:
        """``BRPOP`` the active queues' token lists (kombu: the queues themselves);
        the watcher makes sure a message on any of the queues leaves a token."""
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        watcher = self._start_watcher()
        if not queues:
            if watcher is not None:
                watcher.watch(())
            return
        # Same order as kombu's BRPOP keys: by priority step, then queue cycle.
        self._take_keys = [
            (queue, self._q_for_pri(queue, pri))  # type: ignore[attr-defined]
            for pri in self.priority_steps
            for queue in queues
        ]
        resting = self._token_left
        self._token_left = False
        if watcher is not None:
            watcher.watch(key for _, key in self._take_keys)
            if resting:
                # Through a backlog the token the last take left wakes this poll:
                # arming would cost a BLMOVE and a wake script per job for nothing.
                timeout = min(timeout or RESTING_BRPOP_TIMEOUT, RESTING_BRPOP_TIMEOUT)
            else:
                watcher.arm()  # only now: this channel can take another message
        keys = [wake_key(key) for _, key in self._take_keys]
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        self.client.connection.send_command("BRPOP", *keys, timeout or 0)

    def _brpop_read(self, **options: Any) -> bool:
        """Read the ``BRPOP`` reply (a token, or nothing after the timeout), then take
        the next message with the take script: after a timeout it finds messages
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
            self._flush_brpop_reauth()  # type: ignore[attr-defined]
        if self._closing:
            # Channel.close reads the pending reply; taking a message now would
            # only move it to ``unacked`` for nobody.
            raise Empty()
        return self._take_and_deliver(self._take_keys)

    def _take_and_deliver(self, take_keys: Sequence[tuple[str, str]]) -> bool:
        if not take_keys:
            raise Empty()
        record = self.ack_emulation
        flags = [
            "0" if not record or queue in self._no_ack_queues else "1" for queue, _ in take_keys
        ]
        keys = [self.unacked_key, self.unacked_index_key]
        keys += [key for _, key in take_keys] + [wake_key(key) for _, key in take_keys]
        with self.conn_or_acquire() as client:
            reply = self._take_script(
                keys=keys, args=[repr(time()), len(take_keys), *flags], client=client
            )
        if not reply:
            raise Empty()
        index, item, recorded, left = reply
        self._token_left = bool(int(left))
        queue = take_keys[int(index) - 1][0]
        payload = loads(bytes_to_str(item))
        tag = payload["properties"]["delivery_tag"] if int(recorded) else None
        if tag is not None:
            self._recorded_by_take.add(tag)  # QoS.append, called by _deliver, skips its write
        self._queue_cycle.rotate(queue)
        try:
            self.connection._deliver(payload, queue)
        finally:
            if tag is not None:
                self._recorded_by_take.discard(tag)
        return True


class Channel(ReliableConsuming, kombu_redis.Channel):  # type: ignore[misc]
    """kombu's Redis channel, consuming with the take script and the watcher."""

    QoS = QoS
    from_transport_options = (*kombu_redis.Channel.from_transport_options, "queue_watcher")


class SentinelChannel(ReliableConsuming, kombu_redis.SentinelChannel):  # type: ignore[misc]
    """kombu's Sentinel channel, consuming as :class:`Channel` does."""

    QoS = QoS
    from_transport_options = (*kombu_redis.SentinelChannel.from_transport_options, "queue_watcher")


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel

    def __init__(self, client: Any, **kwargs: Any) -> None:
        if getattr(client, "alt", None):
            # kombu's failover (Connection.switch) re-reads the transport from the
            # URL scheme and would silently drop this one.
            raise RuntimeError(
                "cards.transport does not support failover broker URLs (a;b): "
                "for Redis high availability use sentinel:// URLs"
            )
        super().__init__(client, **kwargs)


class SentinelTransport(kombu_redis.SentinelTransport):  # type: ignore[misc]
    """kombu's Sentinel transport with :class:`SentinelChannel`.

    kombu reads the ``;``-separated sentinels of the URL as failover URLs too: on a
    connection error ``Connection.switch`` would move to the next one and swap in
    kombu's own transport (by the URL's scheme). With Sentinel the sentinels are
    the failover (every reconnect asks them for the master), so that switch is
    turned off; the channel still reads the sentinels from ``client.alt``.
    """

    Channel = SentinelChannel

    def __init__(self, client: Any, **kwargs: Any) -> None:
        client.cycle = None
        super().__init__(client, **kwargs)

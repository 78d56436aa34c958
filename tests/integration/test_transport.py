"""cards.transport against a real private redis-server: both kombu bugs it fixes,
reproduced deterministically with kombu's own transport, and shown fixed with ours;
and its watcher, which wakes a worker for a message from any producer.

- R2: after Celery's reaction to a lost connection (``collect()`` then ``close()``)
  kombu's channel raises ``AttributeError`` on ``connection.client`` being ``None``,
  and Celery stops the worker. Ours raises a connection error, which is ignored.
- R1: a worker that reads a ``BRPOP`` reply and dies before anything else loses the
  message with kombu's transport; with ours the message is still there, and the
  pop that does take it records it in ``unacked`` in the same atomic step.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue

import celeryconfig
from cards.settings import get_settings
from cards.transport import WAKE_KEY_PREFIX, Channel, check_kombu_internals
from cards.transport.channel import RESTING_BRPOP_TIMEOUT
from cards.transport.queue_watcher import QueueWatcher
from harness.chaos import RestartableRedis, run_restartable_redis
from harness.processes import client_app, wait_for
from harness.queues import raw_task_message

pytestmark = pytest.mark.timeout(60)

OURS = "cards.transport:Transport"
KOMBUS = "kombu.transport.redis:Transport"
QUEUE = "t-jobs"
#: Short enough for a test to wait one out.
VISIBILITY_TIMEOUT = 1


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RestartableRedis]:
    with run_restartable_redis(tmp_path / "redis") as running:
        yield running


def connect(server: RestartableRedis, transport: str) -> Connection:
    return Connection(
        server.url(),
        transport=transport,
        transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
    )


def publish(connection: Connection, body: dict[str, Any]) -> None:
    queue = Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE)
    with connection.Producer() as producer:
        producer.publish(body, exchange=queue.exchange, routing_key=QUEUE, declare=[queue])


def consume_one(connection: Connection, *, ack: bool = True, timeout: float = 5) -> Any:
    """Consume one message (acked unless told not to) and return it."""
    received: list[Any] = []

    def on_message(body: Any, message: Any) -> None:
        received.append(message)
        if ack:
            message.ack()

    with connection.Consumer(
        Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE), callbacks=[on_message]
    ):
        connection.drain_events(timeout=timeout)
    return received[0]


def unacked_tags(client: redis.Redis) -> set[str]:
    return {tag.decode() for tag in client.hkeys("unacked")}


# --------------------------------------------------------------------------- R2


def lose_connection_like_celery(server: RestartableRedis, transport: str) -> Connection:
    """A worker's state when Redis goes away, then what Celery's
    ``Consumer.on_connection_error_after_connected`` does: ``collect()``, ``close()``.

    The default channel holds an unacknowledged message; it and a second channel
    (a worker has several) each have a BRPOP in flight, as in the event loop. Both
    fail to close in ``collect()`` (reading that BRPOP raises), and the second
    one's failure stops ``close_connection`` before it retries the default one,
    which ``close()`` then closes for real, after ``collect()`` detached the
    transport.
    """
    connection = connect(server, transport)
    publish(connection, {"job": 1})
    message = consume_one(connection, ack=False)
    channel = connection.default_channel
    assert message.delivery_tag in channel.qos._delivered
    other = connection.channel()
    cycle = connection.transport.cycle
    with (
        connection.Consumer(Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE)),
        connection.Consumer(Queue("t-other"), channel=other),
    ):
        cycle._register_BRPOP(channel)
        cycle._register_BRPOP(other)
    assert channel._in_poll and other._in_poll
    server.stop(crash=True)
    connection.collect(socket_timeout=1)  # detaches the transport: transport.client = None
    assert connection._default_channel is channel and not channel.closed
    return connection


def test_kombu_transport_crashes_on_close_after_collect(server: RestartableRedis) -> None:
    """The bug, with kombu's own transport: the error Celery cannot recover from."""
    connection = lose_connection_like_celery(server, KOMBUS)
    with pytest.raises(AttributeError, match="hostname"):
        connection.close()


def test_our_transport_closes_cleanly_and_keeps_the_message(server: RestartableRedis) -> None:
    connection = lose_connection_like_celery(server, OURS)
    connection.close()  # no exception: Celery goes on to reconnect
    # No queue watcher outlives its channels (each lost connection would leak threads).
    wait_for(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("cards-queue-watcher:")],
        10,
        "the closed channels' queue watchers to stop",
    )
    server.start()
    client = server.client()
    # The unacknowledged message stayed in Redis and comes back after the
    # visibility timeout, to the next consumer.
    assert len(unacked_tags(client)) == 1
    with connect(server, OURS) as again:
        again.default_channel.qos.restore_visible(start=0, num=10, interval=1)  # too early
        assert client.llen(QUEUE) == 0
        client.zadd("unacked_index", {next(iter(unacked_tags(client))): 0})  # older than VT
        again.default_channel.qos.restore_visible(start=0, num=10, interval=1)
        message = consume_one(again)
        assert message.payload == {"job": 1}
        assert message.delivery_info["redelivered"] is True
    assert unacked_tags(client) == set()


def test_detached_channel_raises_a_connection_error(server: RestartableRedis) -> None:
    connection = connect(server, OURS)
    channel = connection.default_channel
    assert isinstance(channel, Channel)
    channel._disconnect_pools()
    connection.transport.client = None
    with pytest.raises(redis.exceptions.ConnectionError):
        channel._connparams()
    assert issubclass(redis.exceptions.ConnectionError, connection.connection_errors)


# --------------------------------------------------------------------------- R1


def die_after_brpop_reply(connection: Connection) -> None:
    """What a worker does before it is SIGKILLed in kombu's window: BRPOP on its
    queues and read the reply. Nothing after that."""
    channel = connection.default_channel
    with connection.Consumer(
        Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE), callbacks=[lambda *_: None]
    ):
        connection.transport.cycle._register_BRPOP(channel)
        reply = channel.client.parse_response(channel.client.connection, "BRPOP")
    assert reply is not None
    # The process is gone: its socket closes, and it runs no cleanup.
    channel.client.connection.disconnect()
    channel._in_poll = None


def test_kombu_transport_loses_a_message_popped_by_a_dying_worker(
    server: RestartableRedis,
) -> None:
    """The bug, with kombu's own transport: the message is in neither the queue nor
    ``unacked``; no consumer will ever see it."""
    with connect(server, KOMBUS) as producer:
        publish(producer, {"job": 2})
    with connect(server, KOMBUS) as worker:
        die_after_brpop_reply(worker)
    client = server.client()
    assert client.llen(QUEUE) == 0
    assert unacked_tags(client) == set()


def test_our_transport_keeps_a_message_whose_worker_died_after_brpop(
    server: RestartableRedis,
) -> None:
    """Ours: the worker popped only a wake-up token (its watcher left it for the
    message). The message stays queued, and another worker takes it."""
    with connect(server, OURS) as producer:
        publish(producer, {"job": 3})
    with connect(server, OURS) as worker:
        die_after_brpop_reply(worker)
    client = server.client()
    assert client.llen(QUEUE) == 1
    # The dead worker took the token; its watcher thread, armed while it polled, may
    # have pushed a fresh one for the message still queued before the socket closed
    # (a spare token only wakes one poll). Never more than one: wake.lua checks.
    assert client.llen(WAKE_KEY_PREFIX + QUEUE) <= 1
    with connect(server, OURS) as other:
        assert consume_one(other).payload == {"job": 3}
    assert client.llen(QUEUE) == 0
    assert unacked_tags(client) == set()


def test_messages_without_tokens_are_not_slowed_down(server: RestartableRedis) -> None:
    """Messages from a producer without our transport: taken at once (the watcher
    wakes the worker; the take script leaves a token for the rest of the backlog)."""
    with connect(server, KOMBUS) as producer:
        for n in range(10):
            publish(producer, {"job": n})
    began = time.monotonic()
    with connect(server, OURS) as worker:
        assert [consume_one(worker).payload["job"] for _ in range(10)] == list(range(10))
    assert time.monotonic() - began < 5  # ten BRPOP timeouts would take 10 s
    assert server.client().exists(WAKE_KEY_PREFIX + QUEUE) == 0


def test_the_pop_records_the_message_in_unacked_atomically(server: RestartableRedis) -> None:
    """The pop script moves the message into ``unacked`` (hash and index) before the
    worker sees it, with exactly the record kombu's ``QoS.append`` writes; a worker
    that dies right after the pop leaves it there for the visibility timeout."""
    with connect(server, OURS) as producer:
        publish(producer, {"job": 4})
    client = server.client()
    with connect(server, OURS) as worker:
        channel = worker.default_channel

        def die(*_: object) -> None:
            raise SystemExit("SIGKILL")  # before any code of the worker's runs

        with worker.Consumer(Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE), callbacks=[die]):
            channel.connection._deliver = die
            with pytest.raises(SystemExit):
                worker.drain_events(timeout=5)
        channel.qos._delivered.clear()  # as if the process had died: nothing restored
    assert client.llen(QUEUE) == 0
    (tag,) = unacked_tags(client)
    assert client.zscore("unacked_index", tag) is not None
    payload, exchange, routing_key = json.loads(client.hget("unacked", tag) or b"")
    assert payload["properties"]["delivery_tag"] == tag
    assert (exchange, routing_key) == (QUEUE, QUEUE)
    # Back after the visibility timeout, to another worker.
    client.zadd("unacked_index", {tag: 0})
    with connect(server, OURS) as other:
        other.default_channel.qos.restore_visible(start=0, num=10, interval=1)
        assert client.llen(QUEUE) == 1
        message = consume_one(other)
        assert message.payload == {"job": 4}
    assert unacked_tags(client) == set()


def test_acked_messages_leave_nothing_behind(server: RestartableRedis) -> None:
    """The happy path: every message consumed once, in order, tokens and records gone."""
    with connect(server, OURS) as producer:
        for n in range(20):
            publish(producer, {"job": n})
    client = server.client()
    assert client.exists(WAKE_KEY_PREFIX + QUEUE) == 0  # producers push kombu's LPUSH only
    with connect(server, OURS) as worker:
        assert [consume_one(worker).payload["job"] for _ in range(20)] == list(range(20))
        with pytest.raises((Empty, TimeoutError)):
            consume_one(worker, timeout=1.5)
    assert client.llen(QUEUE) == 0
    assert client.exists(WAKE_KEY_PREFIX + QUEUE) == 0
    assert unacked_tags(client) == set()
    assert client.zcard("unacked_index") == 0


def test_a_sweeper_killed_holding_the_sweep_lock_holds_sweeps_back_one_interval_at_most(
    server: RestartableRedis,
) -> None:
    """kombu sweeps ``unacked`` under a Redis lock that it expires after 300 s: a worker
    SIGKILLed mid-sweep left the lock, and no worker restored a dead worker's job for
    five minutes. With the project's transport options it expires after one interval."""
    options = {**celeryconfig.broker_transport_options, "visibility_timeout": VISIBILITY_TIMEOUT}
    with Connection(server.url(), transport=OURS, transport_options=options) as producer:
        publish(producer, {"job": 6})
    client = server.client()
    with Connection(server.url(), transport=OURS, transport_options=options) as dead:
        consume_one(dead, ack=False)
        dead.default_channel.qos._delivered.clear()  # as if it had died: nothing restored
    (tag,) = unacked_tags(client)
    client.zadd("unacked_index", {tag: 0})  # long past the visibility timeout
    with Connection(server.url(), transport=OURS, transport_options=options) as other:
        qos = other.default_channel.qos
        interval = get_settings().unacked_restore_interval_seconds
        assert qos.unacked_mutex_expire <= interval
        # The lock as a sweeper killed inside its sweep leaves it.
        assert client.lock(qos.unacked_mutex_key, timeout=qos.unacked_mutex_expire).acquire(
            blocking=False
        )
        qos.restore_visible(start=0, num=10, interval=1)
        assert client.llen(QUEUE) == 0  # held back by the dead sweeper's lock

        def swept() -> bool:
            qos.restore_visible(start=0, num=10, interval=1)
            return bool(client.llen(QUEUE) == 1)

        wait_for(swept, interval + 5, "a sweep after the dead sweeper's lock expired")
        assert consume_one(other).payload == {"job": 6}
    assert unacked_tags(client) == set()


def test_no_ack_consumers_are_not_recorded(server: RestartableRedis) -> None:
    """A no_ack consumer never acks, so its messages must not go to ``unacked``."""
    with connect(server, OURS) as producer:
        publish(producer, {"job": 5})
    received: list[Any] = []
    with connect(server, OURS) as worker:
        queue = Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE)
        with worker.Consumer(queue, callbacks=[lambda body, _: received.append(body)], no_ack=True):
            worker.drain_events(timeout=5)
    assert received == [{"job": 5}]
    assert unacked_tags(server.client()) == set()


def test_kombu_internals_are_the_ones_patched() -> None:
    check_kombu_internals()


# --------------------------------------------------------------------------- waking up


def watchers_blocked(client: redis.Redis) -> int:
    """Connections blocked in the watcher's ``BLMOVE`` (one per watched list)."""
    return sum(
        1
        for entry in client.client_list()
        if entry.get("cmd") == "blmove" and "b" in entry.get("flags", "")
    )


def delivery_latencies(
    server: RestartableRedis, queues: list[str], push: Any, rounds: int
) -> list[float]:
    """Seconds from each ``push(n)`` to its delivery, to a consumer of ``queues`` that
    is idle (blocked) when the message arrives. Each round waits on conditions: the
    watcher blocked on every list, then the message delivered."""
    client = server.client()
    received: list[tuple[int, float]] = []
    latencies: list[float] = []
    with connect(server, OURS) as worker:
        consumers = [
            worker.Consumer(
                Queue(name, Exchange(name), routing_key=name),
                callbacks=[
                    lambda body, message: (received.append((body, time.monotonic())), message.ack())
                ],
                accept=["json"],
            )
            for name in queues
        ]
        for consumer in consumers:
            consumer.consume()
        stop = threading.Event()

        def drain() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError, Empty):
                    worker.drain_events(timeout=0.2)

        watched = 4 * len(queues)  # every priority step of every queue
        thread = threading.Thread(target=drain)
        thread.start()
        try:
            for n in range(rounds):
                wait_for(lambda: watchers_blocked(client) >= watched, 10, "watchers blocked")
                began = time.monotonic()
                push(n)
                wait_for(lambda n=n: any(body == n for body, _ in received), 10, f"message {n}")
                latencies.append(next(at for body, at in received if body == n) - began)
        finally:
            stop.set()
            thread.join(5)
            for consumer in consumers:
                consumer.cancel()
    return latencies


def report(what: str, latencies: list[float]) -> float:
    p50 = statistics.median(latencies)
    print(
        f"{what}: p50 {p50 * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms, n={len(latencies)}"
    )
    return p50


def raw_lpush(client: redis.Redis, queue: str, body: int, priority: int = 0) -> None:
    """A kombu-format JSON message carrying ``body``, pushed with one LPUSH."""
    message = json.loads(raw_task_message("t", {}, str(uuid.uuid4()), queue, priority=priority))
    message["body"] = json.dumps(body)
    message["body_encoding"] = None
    message["properties"]["body_encoding"] = "utf-8"
    key = queue if not priority else f"{queue}\x06\x16{priority}"
    client.lpush(key, json.dumps(message))


def test_a_raw_lpush_wakes_an_idle_worker_at_once(server: RestartableRedis) -> None:
    """No token, no kombu: one LPUSH from outside is taken well before the 1 s poll."""
    client = server.client()
    latencies = delivery_latencies(server, [QUEUE], lambda n: raw_lpush(client, QUEUE, n), 10)
    assert report("raw LPUSH, in process", latencies) < 0.5
    assert unacked_tags(client) == set()


def test_a_worker_on_several_queues_is_woken_by_each(server: RestartableRedis) -> None:
    """``-Q a,b``: a message on either queue, and at any priority, wakes the worker."""
    client = server.client()
    pushes = [
        lambda n: raw_lpush(client, QUEUE, n),
        lambda n: raw_lpush(client, "t-bulk", n),
        lambda n: raw_lpush(client, "t-bulk", n, priority=9),
    ]
    latencies = delivery_latencies(server, [QUEUE, "t-bulk"], lambda n: pushes[n % 3](n), 9)
    assert report("two queues and a priority", latencies) < 0.5


def test_the_watcher_reconnects_when_its_connections_are_cut(server: RestartableRedis) -> None:
    """A watcher whose blocked connections are killed (a proxy, a failover) opens new
    ones by itself, and wakes the worker at once again."""
    client = server.client()

    def push(n: int) -> None:
        if n == 2:
            for entry in client.client_list():
                if entry.get("cmd") == "blmove":
                    client.client_kill_filter(_id=entry["id"])
            wait_for(lambda: watchers_blocked(client) >= 4, 15, "watchers back")
        raw_lpush(client, QUEUE, n)

    latencies = delivery_latencies(server, [QUEUE], push, 6)
    assert report("after its connections were cut", latencies[3:]) < 0.5
    assert client.llen(QUEUE) == 0


def test_a_broadcast_leaves_no_watcher_behind(server: RestartableRedis) -> None:
    """``celery inspect`` and Flower broadcast, then collect the replies on a queue of
    their own: once the consumer of the replies is gone, nothing is left blocked on
    Redis for it (it stayed as long as the connection, and retried a lost Redis for
    ever)."""
    app = client_app(server.url())
    assert app.control.ping(timeout=0.3) == []  # no worker here: no reply
    client = server.client()
    wait_for(lambda: watchers_blocked(client) == 0, 10, "the watcher to let its lists go")

    def reply_watchers() -> list[str]:
        return [t.name for t in threading.enumerate() if "reply.celery.pidbox" in t.name]

    # A thread ends just after its blocked command does: wait for that, not for luck.
    wait_for(lambda: not reply_watchers(), 10, "the reply queue's watcher threads to end")


def test_the_watcher_leaves_every_message_in_its_queue(server: RestartableRedis) -> None:
    """While its worker takes nothing, the watcher wakes it once and leaves the
    queue as it was: same messages, same order, one token, nothing in ``unacked``."""
    client = server.client()
    for n in range(5):
        raw_lpush(client, QUEUE, n)
    before = client.lrange(QUEUE, 0, -1)
    with connect(server, OURS) as worker:
        channel = worker.default_channel
        with worker.Consumer(Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE)):
            channel._start_watcher().watch([QUEUE])  # watch, without ever taking
            wait_for(lambda: client.llen(WAKE_KEY_PREFIX + QUEUE) == 1, 5, "a token")
            wait_for(lambda: watchers_blocked(client) == 0, 5, "the watcher disarmed")
    assert client.lrange(QUEUE, 0, -1) == before
    assert client.llen(WAKE_KEY_PREFIX + QUEUE) == 1
    assert unacked_tags(client) == set()


def test_a_backlog_does_not_wake_the_watcher_per_message(
    server: RestartableRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through a backlog the token each take leaves wakes the next poll: the watcher
    is armed when the queue was found empty, not for every message (a ``BLMOVE`` and
    a wake script each)."""
    client = server.client()
    for n in range(30):
        raw_lpush(client, QUEUE, n)
    arms: list[float] = []
    original = QueueWatcher.arm
    monkeypatch.setattr(QueueWatcher, "arm", lambda self: (arms.append(1), original(self)))
    with connect(server, OURS) as worker:
        assert [consume_one(worker).payload for _ in range(30)] == list(range(30))
    assert len(arms) <= 2  # the first poll, and the one after the last message
    assert client.llen(QUEUE) == 0 and unacked_tags(client) == set()


def test_a_worker_whose_token_was_taken_by_another_finds_the_next_message_soon(
    server: RestartableRedis,
) -> None:
    """A worker's last take left a token, then another worker took it and emptied the
    queue: the first one's next poll, resting without its watcher, gives up after
    ``RESTING_BRPOP_TIMEOUT`` and takes a new message well before the 1 s poll."""
    client = server.client()
    raw_lpush(client, QUEUE, 1)
    raw_lpush(client, QUEUE, 2)
    with connect(server, OURS) as first, connect(server, OURS) as other:
        assert consume_one(first).payload == 1  # leaves a token for message 2
        assert consume_one(other).payload == 2  # takes it, empties the queue
        assert client.exists(WAKE_KEY_PREFIX + QUEUE) == 0
        raw_lpush(client, QUEUE, 3)  # no token: only a poll or a watcher finds it
        began = time.monotonic()
        assert consume_one(first).payload == 3
        assert time.monotonic() - began < RESTING_BRPOP_TIMEOUT + 0.4


def test_a_channel_reuses_one_redis_client_per_connection_pool(server: RestartableRedis) -> None:
    """Publishes, acks and takes share one client object (kombu built one each);
    a reconnect's new pool gets a new one."""
    with connect(server, OURS) as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as one, channel.conn_or_acquire() as two:
            assert one is two and one.connection_pool is channel.pool
            assert one.ping()
        channel._disconnect_pools()
        with channel.conn_or_acquire() as after:
            assert after is not one and after.connection_pool is channel.pool
            assert after.ping()

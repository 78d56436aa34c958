"""cards.transport against a real private redis-server: both kombu bugs it fixes,
reproduced deterministically with kombu's own transport, and shown fixed with ours.

- R2: after Celery's reaction to a lost connection (``collect()`` then ``close()``)
  kombu's channel raises ``AttributeError`` on ``connection.client`` being ``None``,
  and Celery stops the worker. Ours raises a connection error, which is ignored.
- R1: a worker that reads a ``BRPOP`` reply and dies before anything else loses the
  message with kombu's transport; with ours the message is still there, and the
  pop that does take it records it in ``unacked`` in the same atomic step.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue

from cards.transport import WAKE_KEY_PREFIX, Channel, check_kombu_internals
from harness.chaos import RestartableRedis, run_restartable_redis

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
    """Ours: the worker popped only a wake-up token. The message stays queued, and
    another worker takes it although no token is left for it (BRPOP times out,
    then the pop script runs)."""
    with connect(server, OURS) as producer:
        publish(producer, {"job": 3})
    with connect(server, OURS) as worker:
        die_after_brpop_reply(worker)
    client = server.client()
    assert client.llen(QUEUE) == 1
    assert client.llen(WAKE_KEY_PREFIX + QUEUE) == 0  # the dead worker took the token
    with connect(server, OURS) as other:
        assert consume_one(other).payload == {"job": 3}
    assert client.llen(QUEUE) == 0
    assert unacked_tags(client) == set()


def test_messages_without_tokens_are_not_slowed_down(server: RestartableRedis) -> None:
    """Messages from a producer without our transport (no tokens): the first waits for
    one BRPOP timeout (1 s), the rest follow at once on the token the pop leaves."""
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
        assert client.llen(WAKE_KEY_PREFIX + QUEUE) == 1  # restored with a token
        message = consume_one(other)
        assert message.payload == {"job": 4}
    assert unacked_tags(client) == set()


def test_acked_messages_leave_nothing_behind(server: RestartableRedis) -> None:
    """The happy path: every message consumed once, in order, tokens and records gone."""
    with connect(server, OURS) as producer:
        for n in range(20):
            publish(producer, {"job": n})
    client = server.client()
    assert client.llen(WAKE_KEY_PREFIX + QUEUE) == 20
    with connect(server, OURS) as worker:
        assert [consume_one(worker).payload["job"] for _ in range(20)] == list(range(20))
        with pytest.raises((Empty, TimeoutError)):
            consume_one(worker, timeout=1.5)
    assert client.llen(QUEUE) == 0
    assert client.exists(WAKE_KEY_PREFIX + QUEUE) == 0
    assert unacked_tags(client) == set()
    assert client.zcard("unacked_index") == 0


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

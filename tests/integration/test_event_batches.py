"""Task events leave the worker in batches (``worker.events``): none lost, few messages.

A real Redis carries the events; a raw pub/sub subscriber counts the messages and
Celery's own ``EventReceiver`` (what Flower uses) reads the events in them.
"""

from __future__ import annotations

import base64
import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from harness.processes import RedisServer, wait_for
from worker.events import FLUSH_SECONDS, BatchingDispatcher

THREADS = 6
EVENTS_PER_THREAD = 10


@pytest.fixture
def app(redis_server: RedisServer) -> Celery:
    app = Celery("event-batches", broker=redis_server.url())
    app.events.dispatcher_cls = "worker.events:BatchingDispatcher"
    return app


class Subscriber:
    """Every message published on the event exchange, decoded to its list of events."""

    def __init__(self, client: redis.Redis) -> None:
        self.messages: list[list[dict[str, Any]]] = []
        self._client = client  # redis-py closes its pool, the subscription's too, when GC'd
        self._pubsub = client.pubsub()
        self._pubsub.psubscribe("*celeryev*")
        self._stop = threading.Event()
        self.ready = threading.Event()  # Redis confirmed the subscription
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self._pubsub.get_message(timeout=0.05)
            if item is not None and item["type"] == "psubscribe":
                self.ready.set()
            if item is None or item["type"] != "pmessage":
                continue
            message = json.loads(item["data"])
            body = message["body"]
            if message["properties"].get("body_encoding") == "base64":
                body = base64.b64decode(body)
            events = json.loads(body)
            self.messages.append(events if isinstance(events, list) else [events])

    def events(self) -> list[dict[str, Any]]:
        return [event for message in list(self.messages) for event in message]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._pubsub.close()


@pytest.fixture
def subscriber(redis_server: RedisServer) -> Iterator[Subscriber]:
    sub = Subscriber(redis_server.client())
    wait_for(sub.ready.is_set, 5, "the subscription")
    yield sub
    sub.close()


class EventLoop:
    """Stands in for the worker's event loop: ``wake`` schedules a flush, as Celery's
    ``hub.call_soon`` does; the flush and every publish run on this one thread."""

    def __init__(self) -> None:
        self.dispatcher: BatchingDispatcher | None = None
        self.wakes = 0
        self.publishing_threads: set[str] = set()
        self._asked: queue.Queue[bool] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="event-loop", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self.wakes += 1
        self._asked.put(True)

    def _run(self) -> None:
        while self._asked.get():
            if self.dispatcher is not None:
                self.dispatcher.flush()

    def close(self) -> None:
        self._asked.put(False)
        self._thread.join(5)


@pytest.fixture
def loop() -> Iterator[EventLoop]:
    running = EventLoop()
    yield running
    running.close()


def dispatcher(app: Celery, connection: Any, loop: EventLoop) -> BatchingDispatcher:
    """The dispatcher as Celery's worker consumer builds it (task events buffered)."""
    made = app.events.Dispatcher(
        connection,
        hostname="batches@test",
        enabled=True,
        buffer_group=["task"],
        on_send_buffered=loop.wake,
    )
    assert isinstance(made, BatchingDispatcher)
    publish = made._publish

    def recorded(*args: Any, **kwargs: Any) -> Any:
        loop.publishing_threads.add(threading.current_thread().name)
        return publish(*args, **kwargs)

    made._publish = recorded  # type: ignore[method-assign]
    loop.dispatcher = made
    return made


def test_the_worker_app_uses_the_batching_dispatcher() -> None:
    from worker.app import app as worker_app

    assert issubclass(worker_app.events.Dispatcher, BatchingDispatcher)


def test_events_from_many_threads_all_arrive_in_few_messages_from_the_loop(
    app: Celery, subscriber: Subscriber, loop: EventLoop
) -> None:
    with app.connection_for_write() as connection:
        events = dispatcher(app, connection, loop)

        def send(thread: int) -> None:
            for n in range(EVENTS_PER_THREAD):
                events.send("task-received", uuid=f"job-{thread}-{n}")

        threads = [threading.Thread(target=send, args=(t,)) for t in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        total = THREADS * EVENTS_PER_THREAD
        wait_for(lambda: len(subscriber.events()) >= total, 10, "every event")
        events.close()
    got = subscriber.events()
    assert sorted(e["uuid"] for e in got) == sorted(
        f"job-{t}-{n}" for t in range(THREADS) for n in range(EVENTS_PER_THREAD)
    )
    assert {e["type"] for e in got} == {"task-received"}
    # Celery publishes at most buffer_limit (24) events a message, one per flush.
    assert len(subscriber.messages) <= total // 3, len(subscriber.messages)
    assert loop.wakes <= total // 3, loop.wakes  # not one flush an event
    # Only the event loop publishes (and a sender whose event fills the buffer, as in
    # Celery): a py-amqp connection must not be written by two threads at once.
    assert "event-loop" in loop.publishing_threads
    assert "cards-event-flush" not in loop.publishing_threads


def test_celerys_event_receiver_reads_the_batches(
    app: Celery, redis_server: RedisServer, loop: EventLoop
) -> None:
    """Flower reads events with Celery's EventReceiver; a batch is one ``task.multi``."""
    seen: list[str] = []
    client = redis_server.client()
    with app.connection_for_write() as listening:
        receiver = app.events.Receiver(
            listening, handlers={"task-succeeded": lambda event: seen.append(event["uuid"])}
        )
        done = threading.Thread(
            target=lambda: receiver.capture(limit=5, timeout=10, wakeup=False), daemon=True
        )
        done.start()
        wait_for(lambda: client.pubsub_numpat() > 0, 10, "the receiver to subscribe")
        with app.connection_for_write() as connection:
            events = dispatcher(app, connection, loop)
            for n in range(5):
                events.send("task-succeeded", uuid=f"job-{n}", result="'ok'")
            done.join(15)
            events.close()
    assert seen == [f"job-{n}" for n in range(5)]


def test_closing_publishes_what_is_buffered_at_once(
    app: Celery, subscriber: Subscriber, loop: EventLoop
) -> None:
    with app.connection_for_write() as connection:
        events = dispatcher(app, connection, loop)
        for n in range(5):
            events.send("task-started", uuid=f"job-{n}")
        assert subscriber.events() == []  # still waiting for company
        events.close()  # well before FLUSH_SECONDS
        wait_for(lambda: len(subscriber.events()) == 5, 5, "the buffered events")
    assert [e["uuid"] for e in subscriber.events()] == [f"job-{n}" for n in range(5)]
    assert FLUSH_SECONDS <= 0.1

"""Sending the gateway's jobs on the event loop: Celery builds each message, redis.asyncio sends it.

Celery's own ``send_task`` (:func:`producers.client.send_job`, as every producer)
builds the task message and its ``task-sent`` event, serializer, signing, headers
and publish signals included, on a kombu Redis channel whose client only records
the commands kombu would send (``LPUSH`` of the message, ``PUBLISH`` of the event,
``SADD`` of the queue's binding on first use). Those go to the broker in one
pipeline on an asyncio connection, in one transaction with any command the caller
adds (the claim, or its mark): no thread-pool hop. A broker that is not Redis
(amqp), or a send that meets a connection error, goes through Celery's blocking
send in the thread pool instead, with its publish retries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import kombu
import redis
import redis.asyncio
from celery import Celery
from kombu.transport import redis as kombu_redis
from starlette.concurrency import run_in_threadpool

from cards.kinds import Job
from cards.redis_urls import async_redis_client
from cards.settings import get_settings
from producers.client import send_job
from producers.http.shedding import redis_pool_size

__all__ = ["CLIENT_NAME", "NotRecorded", "Publisher", "RecordedCommands", "recording_producer"]

logger = logging.getLogger(__name__)

#: The asyncio broker connection's name in ``CLIENT LIST``.
CLIENT_NAME: Final = "cards-gateway-publish"
#: A send waits at most this long on the broker before it goes through Celery (an
#: ``asyncio.timeout``, cheaper than redis-py's socket timeout: no task per write).
TIMEOUT_SECONDS: Final = 2


class NotRecorded(LookupError):
    """kombu asked the recording client for a command it does not keep (a kombu change)."""


class RecordedCommands:
    """Stands in for a kombu Redis channel's client: keeps the commands it is given."""

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []

    def lpush(self, key: str, *values: Any) -> None:
        self.commands.append(("LPUSH", key, *values))

    def publish(self, channel: str, message: Any) -> None:
        self.commands.append(("PUBLISH", channel, message))

    def sadd(self, key: str, *members: Any) -> None:
        self.commands.append(("SADD", key, *members))

    def __getattr__(self, name: str) -> Any:
        raise NotRecorded(name)


class _Recording:
    """Mixed into the broker's channel class: once :attr:`recorder` is set, every
    command goes to it instead of Redis."""

    recorder: RecordedCommands | None = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if self.recorder is None:
            with super().conn_or_acquire(client) as real:  # type: ignore[misc]
                yield real
        else:
            yield self.recorder


def recording_producer(app: Celery) -> tuple[kombu.Producer, _Recording] | None:
    """A producer on a recording copy of ``app``'s broker channel (and that channel),
    its job queue declared; None unless the broker is Redis. Blocking: talks to the
    broker once."""
    transport = app.connection_for_write().transport
    base = getattr(transport, "Channel", None)  # py-amqp's transport has none
    if not (isinstance(base, type) and issubclass(base, kombu_redis.Channel)):
        return None
    channel = type(f"Recording{base.__name__}", (_Recording, base), {})(transport)
    producer = kombu.Producer(channel)
    # Declaring reads the queue's length: done here, once, as Celery's first send would.
    producer.maybe_declare(app.amqp.queues[get_settings().queue])
    return producer, channel


class Publisher:
    """Send jobs through ``app`` from the event loop (Redis brokers), else the thread pool."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._recording: tuple[kombu.Producer, _Recording] | None = None
        self._redis: redis.asyncio.Redis | None = None
        self._building = asyncio.Lock()
        self._failures = 0  # attempts to build the recording producer that failed
        #: False once the broker turned out not to be Redis.
        self.is_redis = True

    def _broker_client(self) -> redis.asyncio.Redis:
        conf = self.app.conf
        options = conf.broker_transport_options or {}
        ssl = conf.broker_use_ssl if isinstance(conf.broker_use_ssl, dict) else {}
        settings = get_settings()
        return async_redis_client(
            str(conf.broker_url),
            str(options.get("master_name", settings.sentinel_master)),
            socket_timeout=None,
            socket_connect_timeout=TIMEOUT_SECONDS,
            client_name=CLIENT_NAME,
            max_connections=redis_pool_size(settings.gateway_max_in_flight),
            **ssl,
        )

    async def send(self, job: Job, *then: tuple[str, ...]) -> bool:
        """Send a stamped, checked job; a connection error gets Celery's own retries.

        ``then``: commands for the broker's Redis to run with the message, in one
        transaction (``MULTI``/``EXEC``: all or none); True if they ran (on the event
        loop), False if not."""
        if self.is_redis:
            try:
                if await self._send_async(job, then):
                    return True
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                pass  # Celery's blocking send retries as its publish policy says
            except NotRecorded as exc:
                logger.warning("kombu sent %s: jobs go through the thread pool", exc)
                self.is_redis = False
        await run_in_threadpool(send_job, job, self.app)
        return False

    async def _ready(self) -> tuple[kombu.Producer, _Recording, redis.asyncio.Redis] | None:
        """The recording producer, its channel and the broker client, built by the first
        send (once, however many sends arrive together); None if the broker is not Redis.

        A send that waited on another's attempt, which failed (the broker down), does
        not try again in its turn: it raises at once and goes through Celery's send,
        so an outage costs each waiting request one attempt, not one per request ahead.
        """
        if self._recording is None or self._redis is None:
            failures = self._failures
            async with self._building:
                if not self.is_redis:
                    return None
                if self._recording is None or self._redis is None:
                    if self._failures != failures:
                        raise redis.ConnectionError("the broker did not answer the send before")
                    try:
                        recording = await run_in_threadpool(recording_producer, self.app)
                    except BaseException:
                        self._failures += 1
                        raise
                    if recording is None:
                        self.is_redis = False
                        return None
                    self._recording, self._redis = recording, self._broker_client()
        return (*self._recording, self._redis)

    async def _send_async(self, job: Job, then: tuple[tuple[str, ...], ...]) -> bool:
        """Send ``job`` on the event loop; False if the broker is not Redis."""
        ready = await self._ready()
        if ready is None:
            return False
        producer, channel, client = ready
        recorder = channel.recorder = RecordedCommands()
        # Declared once (recording_producer); and a recorder has nothing to retry.
        send_job(job, self.app, producer, declare=(), retry=False)
        async with (
            asyncio.timeout(TIMEOUT_SECONDS),
            client.pipeline(transaction=bool(then)) as pipe,
        ):
            for command in (*recorder.commands, *then):
                pipe.execute_command(*command)
            await pipe.execute()
        return True

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

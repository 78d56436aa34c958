"""Waiting for job results by push: one pub/sub connection per gateway process.

The result backend publishes each stored result on the channel named by its key
(``celery-task-meta-<id>``). All waiters of a process share ONE subscriber
connection: a job's first waiter subscribes to its channel; once Redis confirms
the subscription the key is read once (the result may already be there); the
result's message wakes every waiter of the job; the last to leave unsubscribes.
No thread and no polling per waiter. Losing the connection, the feed reads every
waited-for key (one MGET), and again on each reconnection attempt; reconnected,
it subscribes again and each confirmation reads its key once more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any, Final, cast

import redis
import redis.asyncio
from celery import states

__all__ = ["CLIENT_NAME", "Meta", "ResultFeed", "is_final"]

logger = logging.getLogger(__name__)

Meta = dict[str, Any]

#: The name the feed's connections give Redis (``CLIENT LIST``).
CLIENT_NAME: Final = "cards-gateway-results"
#: With no message for this long the feed PINGs its connection; no answer in as long: lost.
IDLE_SECONDS: Final = 5.0
#: Between reconnection attempts (each also reads every waited-for key).
RECONNECT_SECONDS: Final = 0.5
_ERRORS: Final = (redis.RedisError, OSError)


def is_final(meta: Mapping[str, Any] | None) -> bool:
    """Is this stored result a job's final one (not STARTED or RETRY)? Pure."""
    return meta is not None and meta.get("status") in states.READY_STATES


class ResultFeed:
    """Wake waiters with their job's result from the result backend's pub/sub."""

    def __init__(
        self,
        new_client: Callable[[], redis.asyncio.Redis],
        key_of: Callable[[str], bytes],
        decode: Callable[[bytes], Meta],
    ) -> None:
        self._new_client = new_client
        self._client = new_client()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._key_of = key_of
        self._decode = decode
        self._waiters: dict[bytes, set[asyncio.Future[Meta]]] = {}
        self._confirmed: set[bytes] = set()
        self._connection: Any = None
        self._task: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()
        #: Times the subscriber connection was (re)established; for tests and operators.
        self.connections = 0

    async def wait(self, job_id: str, seconds: float) -> Meta | None:
        """Job ``job_id``'s final stored result, waiting up to ``seconds``; None if none
        by then. A Redis error reading the key at the deadline propagates."""
        self._listen_in(asyncio.get_running_loop())
        key = self._key_of(job_id)
        future: asyncio.Future[Meta] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.get(key)
        try:
            if waiters is None:
                self._waiters[key] = {future}
                await self._send("SUBSCRIBE", key)  # its confirmation reads the key
            else:
                waiters.add(future)
                if key in self._confirmed:  # a live subscription: it may have fired already
                    self._check(key)
            with suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    return await future
            return await self._read(key)  # the last look, at the deadline
        finally:
            self._leave(key, future)

    def _listen_in(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make sure the listener runs in ``loop``. A server runs one loop; a test client
        may run each request in a loop of its own, whose sockets die with it."""
        if self._loop is not loop:
            if self._loop is not None:
                self._client = self._new_client()
                self._connection, self._task = None, None
                self._waiters.clear()
                self._confirmed.clear()
                self._checks = set()
            self._loop = loop
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="result-feed")

    async def close(self) -> None:
        """Stop listening and close the connections."""
        for task in (self._task, *self._checks):
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = None
        await self._drop_connection()
        await self._client.aclose()

    def _leave(self, key: bytes, future: asyncio.Future[Meta]) -> None:
        waiters = self._waiters.get(key)
        if waiters is None:
            return
        waiters.discard(future)
        if not waiters:
            del self._waiters[key]
            self._confirmed.discard(key)
            task = asyncio.get_running_loop().create_task(self._send("UNSUBSCRIBE", key))
            self._keep(task)

    async def _send(self, *command: str | bytes) -> None:
        """Send a (un)subscription; while disconnected, the reconnection subscribes."""
        connection = self._connection
        if connection is None:
            return
        with suppress(*_ERRORS):  # the reader sees the connection fail and takes over
            await connection.send_command(*command, check_health=False)

    async def _read(self, key: bytes) -> Meta | None:
        value = cast("bytes | None", await self._client.get(key))
        meta = None if value is None else self._decode(value)
        return meta if is_final(meta) else None

    def _resolve(self, key: bytes, meta: Meta | None) -> None:
        if meta is None:
            return
        for future in self._waiters.get(key, ()):
            if not future.done():
                future.set_result(meta)

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    def _check(self, key: bytes) -> None:
        """Read ``key`` once, in its own task, and wake its waiters if it is final."""

        async def check() -> None:
            # On an error, the message or the fallback after a lost connection wakes them.
            with suppress(*_ERRORS):
                self._resolve(key, await self._read(key))

        self._keep(asyncio.get_running_loop().create_task(check()))

    async def _run(self) -> None:
        lost = False
        while True:
            try:
                await self._connect()
                if lost:
                    logger.warning("result feed: reconnected")
                lost = False
                await self._listen()
            except _ERRORS as exc:
                if not lost:
                    logger.warning(
                        "result feed: subscriber connection lost (%s); reading waited-for "
                        "results directly until it is back",
                        type(exc).__name__,
                    )
                lost = True
            await self._drop_connection()
            await self._read_all()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _connect(self) -> None:
        connection = self._client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.connect()
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        # From here on new waiters subscribe themselves; these are all the others.
        self._connection = connection
        self.connections += 1
        self._confirmed.clear()
        if self._waiters:
            await connection.send_command("SUBSCRIBE", *self._waiters, check_health=False)

    async def _listen(self) -> None:
        connection = self._connection
        pinged = False
        while True:
            response = await connection.read_response(
                disable_decoding=True, timeout=IDLE_SECONDS, push_request=True
            )
            if response is None:
                if pinged:
                    raise redis.ConnectionError("the subscriber connection stopped answering")
                await connection.send_command("PING", check_health=False)
                pinged = True
                continue
            pinged = False
            kind, channel = response[0], response[1]
            if kind == b"message":
                self._on_message(channel, response[2])
            elif kind == b"subscribe" and channel in self._waiters:
                self._confirmed.add(channel)
                self._check(channel)
            elif kind == b"unsubscribe":
                self._confirmed.discard(channel)  # a new waiter's SUBSCRIBE follows

    def _on_message(self, channel: bytes, data: bytes) -> None:
        if channel not in self._waiters:
            return
        try:
            meta = self._decode(data)
        except Exception:  # a foreign message on the channel: not ours to answer
            logger.warning("result feed: undecodable message on %r", channel)
            return
        if is_final(meta):
            self._resolve(channel, meta)

    async def _read_all(self) -> None:
        """The fallback: every waited-for key in one MGET."""
        keys = list(self._waiters)
        if not keys:
            return
        try:
            values = cast("list[bytes | None]", await self._client.mget(keys))
        except _ERRORS:
            return
        for key, value in zip(keys, values, strict=True):
            if value is not None:
                meta = self._decode(value)
                self._resolve(key, meta if is_final(meta) else None)

    async def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        self._confirmed.clear()
        if connection is not None:
            with suppress(*_ERRORS):
                await connection.disconnect(nowait=True)

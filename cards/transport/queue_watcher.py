"""Wake a worker as soon as one of its queue lists gets a message, whoever pushed it.

One thread per watched Redis list blocks in ``BLMOVE key key RIGHT RIGHT`` (which
moves the last element back where it was) and, when it returns, leaves a wake-up
token beside the list (``lua/wake.lua``) for the worker's event loop; it then stops
watching that list until the worker is ready for more (:meth:`QueueWatcher.arm`).

Invariants: the watcher never removes a message (only the take script takes one);
losing it (a dead thread, a lost connection) only makes the worker poll every 1 s.
A lost connection is logged once, and again when the watcher is back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any

import redis

__all__ = ["QueueWatcher"]

logger = logging.getLogger(__name__)

#: Seconds to wait before reconnecting after a Redis error.
RETRY_SECONDS = 0.5
#: A blocking wait whose reply is this late beyond its own timeout is a dead socket.
REPLY_GRACE_SECONDS = 5.0


class QueueWatcher:
    """Threads that wake a channel when its queue lists (Redis keys) get a message.

    ``pool``: a connection pool of its own (blocking connections are held for
    long); ``wake(client, queue_key)``: leaves a token beside that list, through
    ``client`` (on ``pool``); ``timeout``: the
    seconds one blocking wait lasts (how late a stop or key change is seen);
    ``on_stop``: called once the pool is closed.
    """

    def __init__(
        self,
        pool: Any,
        wake: Callable[[redis.Redis, str], object],
        timeout: float,
        on_stop: Callable[[], object] | None = None,
    ) -> None:
        self._pool = pool
        self._client = redis.Redis(connection_pool=pool)
        self._on_stop = on_stop
        self._wake = wake
        self._timeout = timeout
        self._lock = threading.Lock()
        self._threads: dict[str, tuple[threading.Thread, threading.Event, threading.Event]] = {}
        self._stopped = False

    def watch(self, keys: Iterable[str]) -> None:
        """Watch exactly these lists (starting and stopping threads as needed)."""
        wanted = set(keys)
        with self._lock:
            if self._stopped:
                return
            for key in set(self._threads) - wanted:
                _, stop, armed = self._threads.pop(key)
                stop.set()
                armed.set()
            for key in wanted - set(self._threads):
                stop, armed = threading.Event(), threading.Event()
                armed.set()
                thread = threading.Thread(
                    target=self._run,
                    args=(key, stop, armed),
                    name=f"cards-queue-watcher:{key}",
                    daemon=True,
                )
                self._threads[key] = (thread, stop, armed)
                thread.start()

    def arm(self) -> None:
        """The worker is ready for another message: watch every list again."""
        with self._lock:
            for _, _, armed in self._threads.values():
                armed.set()

    def stop(self) -> None:
        """Stop every thread; their blocked connections are closed with the pool."""
        with self._lock:
            self._stopped = True
            threads = list(self._threads.values())
            self._threads.clear()
        for _, stop, armed in threads:
            stop.set()
            armed.set()
        self._pool.disconnect()
        if self._on_stop is not None:
            self._on_stop()

    @property
    def watched(self) -> set[str]:
        with self._lock:
            return set(self._threads)

    def _run(self, key: str, stop: threading.Event, armed: threading.Event) -> None:
        connection: Any = None
        failing = False  # a failure is logged once, then its end
        while not stop.is_set():
            if not armed.wait(self._timeout):
                continue
            try:
                if connection is None:
                    connection = self._pool.get_connection()
                connection.send_command("BLMOVE", key, key, "RIGHT", "RIGHT", self._timeout)
                if not connection.can_read(timeout=self._timeout + REPLY_GRACE_SECONDS):
                    raise redis.exceptions.TimeoutError(f"no reply to BLMOVE on {key!r}")
                reply = connection.read_response()
                if failing:
                    logger.info("queue watcher on %r: reconnected", key)
                    failing = False
                if reply is None:
                    continue  # the wait timed out: the list stayed empty
                # Disarm first: an arm() from the event loop after the wake must count.
                armed.clear()
                self._wake(self._client, key)
            except Exception as exc:  # a thread must not die: log, reconnect, go on
                if stop.is_set():
                    break  # stop() closed the pool under the blocked read
                if not failing:
                    logger.warning(
                        "queue watcher on %r: %s; retrying every %.1f s (the worker polls "
                        "every %.0f s meanwhile)",
                        key,
                        type(exc).__name__,
                        RETRY_SECONDS,
                        self._timeout,
                    )
                failing = True
                if connection is not None:
                    connection.disconnect()
                    self._pool.release(connection)
                    connection = None
                armed.set()
                stop.wait(RETRY_SECONDS)
        if connection is not None:
            with suppress(Exception):
                connection.disconnect()
                self._pool.release(connection)

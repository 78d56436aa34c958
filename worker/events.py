"""Task events leave the worker in batches, at most ``FLUSH_SECONDS`` after they happen.

Celery buffers a worker's task events (received, started, succeeded or failed)
and publishes what is buffered each time its event loop turns: a few events a
message, and each message is a kombu publish and a Redis ``PUBLISH``, which cost
more than the events in it. Here one thread per dispatcher asks the event loop to
publish the buffer ``FLUSH_SECONDS`` after an event arrives in it, as one
``task.multi`` message (the shape Flower and ``celery events`` already read), or at
once, as Celery does, when it holds ``buffer_limit`` events. Invariants: the event
loop's thread publishes, as before (a py-amqp connection is not thread-safe); no
event is dropped by the batching; closing the dispatcher publishes what it holds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Final

from celery.events.dispatcher import EventDispatcher

__all__ = ["FLUSH_SECONDS", "BatchingDispatcher"]

#: How long a task event may wait for others to share its message.
FLUSH_SECONDS: Final = 0.05


class BatchingDispatcher(EventDispatcher):
    """Celery's dispatcher, whose event loop flushes ``FLUSH_SECONDS`` after an event
    arrives instead of at its next turn."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._due = threading.Event()
        self._closing = threading.Event()
        self._flusher: threading.Thread | None = None
        self._start_lock = threading.Lock()
        #: Celery's: schedules a flush on the event loop (None: nothing is buffered).
        self._wake_loop: Callable[[], object] | None = vars(self).get("on_send_buffered")
        if self._wake_loop is not None:
            self.on_send_buffered = self._flush_soon

    def _flush_soon(self) -> None:
        if self._flusher is None:
            with self._start_lock:
                if self._flusher is None:
                    self._flusher = threading.Thread(
                        target=self._run, name="cards-event-flush", daemon=True
                    )
                    self._flusher.start()
        self._due.set()

    def _run(self) -> None:
        assert self._wake_loop is not None  # started by _flush_soon only
        while not self._closing.is_set():
            self._due.wait()
            self._closing.wait(FLUSH_SECONDS)
            self._due.clear()  # an event buffered from here on sets it again
            self._wake_loop()

    def close(self) -> None:
        self._closing.set()
        self._due.set()
        self.flush()
        super().close()

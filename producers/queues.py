"""Who reads a queue, and how many jobs wait on it: asked of the broker, by any producer.

``cards migrate`` asks before it sends (a migration whose queue no worker
reads would wait forever, silently), and ``cards migrate status`` shows both.

- Readers come from Celery's remote control (``inspect().active_queues()``),
  which every worker answers unless its remote control is disabled; the call
  waits ``timeout`` seconds for replies, so it costs that much every time.
- Depth is the broker's message count for the queue (``queue_declare`` with
  ``passive``, which works on Redis and RabbitMQ alike); a queue that was never
  declared holds nothing. Jobs a worker has taken but not finished are not in it.
"""

from __future__ import annotations

from typing import Any, Final

from amqp.exceptions import ChannelError
from celery import Celery

from producers.client import producer_app

__all__ = ["INSPECT_TIMEOUT_SECONDS", "queue_depth", "queue_readers"]

#: How long a question to the workers waits for their replies.
INSPECT_TIMEOUT_SECONDS: Final = 1.5


def readers_of(queue: str, active_queues: dict[str, Any] | None) -> list[str]:
    """The workers whose ``active_queues`` reply names ``queue``, sorted. (Pure.)"""
    return sorted(
        worker
        for worker, queues in (active_queues or {}).items()
        if any(isinstance(q, dict) and q.get("name") == queue for q in queues or ())
    )


def queue_readers(
    queue: str, app: Celery | None = None, timeout: float = INSPECT_TIMEOUT_SECONDS
) -> list[str]:
    """Names of the workers that read ``queue`` now (empty if none answers in ``timeout``)."""
    replies = (app or producer_app()).control.inspect(timeout=timeout).active_queues()
    return readers_of(queue, replies)


def queue_depth(queue: str, app: Celery | None = None) -> int:
    """Jobs waiting on ``queue`` in the broker."""
    with (app or producer_app()).connection_for_read() as connection:
        channel: Any = connection.default_channel
        try:
            declared = channel.queue_declare(queue=queue, passive=True)
        except ChannelError:  # never declared: nothing was ever sent to it
            return 0
        return int(declared.message_count)

"""What waits in a Redis broker queue, read from outside: messages and the rows they carry.

A bulk batch (``cards.set_default_cards``) is one message holding many rows, so
"jobs pending in Redis" is counted in rows, not in list entries.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import redis

from cards.batches import BATCH_TASK_NAME

__all__ = ["message_rows", "queued_rows"]


def message_rows(raw: bytes | str) -> int:
    """How many jobs one kombu message on a Redis list carries (0 if it is not a task)."""
    try:
        message: Any = json.loads(raw)
    except ValueError:
        return 0
    if not isinstance(message, dict) or not isinstance(message.get("headers"), dict):
        return 0
    if message["headers"].get("task") != BATCH_TASK_NAME:
        return 1
    try:
        _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        return len(kwargs["jobs"])
    except (ValueError, KeyError, TypeError):
        return 0


def queued_rows(client: redis.Redis, queue: str) -> int:
    """Jobs waiting in ``queue``, counting each row of a batch."""
    return sum(message_rows(raw) for raw in client.lrange(queue, 0, -1))

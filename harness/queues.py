"""What waits in a Redis broker queue, read from outside: messages and the rows they carry.

A bulk batch (``cards.set_default_cards``) is one message holding many rows, so
"jobs pending in Redis" is counted in rows, not in list entries.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import redis

from cards.batches import BATCH_TASK_NAME

__all__ = ["message_rows", "queued_rows", "raw_task_message"]


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


def raw_task_message(
    task: str, kwargs: dict[str, Any], task_id: str, queue: str, *, priority: int = 0
) -> str:
    """A Celery protocol-2 task message as kombu's Redis transport stores it, built by
    hand as a producer in another language would: ``LPUSH queue <this>`` sends it."""
    body = json.dumps([[], kwargs, {"callbacks": None, "errbacks": None, "chain": None}])
    return json.dumps(
        {
            "body": base64.b64encode(body.encode()).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                "lang": "raw",
                "task": task,
                "id": task_id,
                "root_id": task_id,
                "parent_id": None,
                "group": None,
                "retries": 0,
                "eta": None,
                "expires": None,
            },
            "properties": {
                "correlation_id": task_id,
                "reply_to": "",
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": priority,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )

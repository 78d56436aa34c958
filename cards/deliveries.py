"""A job's callback: what it carries, and the record of its delivery in Redis.

The body is ``{"job_id", "status", "message", "data"}``: the envelope and the job id,
as compact JSON (:func:`callback_body`), delivered by the task
``cards.deliver_callback`` with task id ``<job_id>:callback``. The delivery record,
one hash per job (``cards:callback:<job_id>``, living as long as results), is written
by the worker and read by producers. It lives beside the job's envelope, never inside
it: a callback's fate does not change the job's result. It holds no customer data and
no URL (a URL may carry a token). The record's fields: ``docs/internals.md``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final, TypedDict

import redis
from redis.typing import EncodableT, FieldT

from cards.redis_urls import redis_client
from cards.settings import get_settings

__all__ = [
    "CALLBACK_TASK_NAME",
    "CallbackStatus",
    "DeliveryState",
    "DeliveryStore",
    "callback_body",
    "callback_task_id",
]

KEY_PREFIX: Final = "cards:callback:"
#: The task that delivers a finished job's callback.
CALLBACK_TASK_NAME: Final = "cards.deliver_callback"


def callback_task_id(job_id: str) -> str:
    """The delivery task's id: findable from the job id (in Flower, say)."""
    return f"{job_id}:callback"


def callback_body(job_id: str, envelope: Mapping[str, Any]) -> str:
    """The JSON body: ``{"job_id", "status", "message", "data"}``."""
    payload = {
        "job_id": job_id,
        "status": envelope["status"],
        "message": envelope["message"],
        "data": envelope["data"],
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class CallbackStatus(TypedDict):
    state: str
    attempts: int
    last_error: str | None
    last_status: int | None
    delivered_at: float | None
    updated_at: float | None


def _optional_int(value: bytes | None) -> int | None:
    return int(value) if value else None


def _optional_float(value: bytes | None) -> float | None:
    return float(value) if value else None


class DeliveryStore:
    def __init__(self, client: redis.Redis, ttl_seconds: int) -> None:
        self._redis = client
        self._ttl = ttl_seconds

    @classmethod
    def from_url(cls, url: str, ttl_seconds: int) -> DeliveryStore:
        return cls(redis_client(url, get_settings().sentinel_master), ttl_seconds)

    def mark_pending(self, job_id: str, now: float) -> None:
        """A delivery is queued; a record that already exists (a redelivered job) is kept."""
        key = KEY_PREFIX + job_id
        pipe = self._redis.pipeline(transaction=True)
        pipe.hsetnx(key, "state", DeliveryState.PENDING.value)
        pipe.hsetnx(key, "attempts", 0)
        pipe.hsetnx(key, "updated_at", repr(now))
        pipe.expire(key, self._ttl)
        pipe.execute()

    def record(self, job_id: str, status: CallbackStatus) -> None:
        key = KEY_PREFIX + job_id
        mapping: dict[FieldT, EncodableT] = {
            name: "" if value is None else str(value) for name, value in status.items()
        }
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(key, mapping=mapping)
        pipe.expire(key, self._ttl)
        pipe.execute()

    def read(self, job_id: str) -> CallbackStatus | None:
        """The job's delivery record, or None if it has none (no callback_url, or expired)."""
        fields: dict[bytes, bytes] = self._redis.hgetall(KEY_PREFIX + job_id)  # type: ignore[assignment]
        if not fields:
            return None
        get = fields.get
        return {
            "state": (get(b"state") or b"pending").decode(),
            "attempts": int(get(b"attempts") or 0),
            "last_error": (get(b"last_error") or b"").decode() or None,
            "last_status": _optional_int(get(b"last_status")),
            "delivered_at": _optional_float(get(b"delivered_at")),
            "updated_at": _optional_float(get(b"updated_at")),
        }

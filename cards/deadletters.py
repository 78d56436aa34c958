"""Dead letters: jobs that failed only because a transient cause outlasted their retries.

Such a job is not wrong, only unlucky (Stripe was down, or rate limits held for
longer than the retry window), so it is kept with its original fields and can
be replayed once the cause is gone. A replay reuses the job id: the same
idempotency key, so a write Stripe already applied is not applied again.

Layout in Redis (shared by the worker, which adds, and the ``cards dlq``
command, which lists, replays and purges):

- ``cards:dlq:entries``: hash, job id → JSON entry ``{job_id, job, envelope, failed_at}``;
- ``cards:dlq:order``: sorted set, job id scored by failure time, for listing oldest first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import redis

from cards.envelope import Envelope, ErrorKind
from cards.redis_urls import redis_client
from cards.settings import get_settings

__all__ = ["DeadLetter", "DeadLetterStore", "is_dead_letter"]

ENTRIES_KEY: Final = "cards:dlq:entries"
ORDER_KEY: Final = "cards:dlq:order"


def is_dead_letter(envelope: Envelope) -> bool:
    """Did the job fail only because transient failures outlasted its retries?"""
    data = envelope["data"] or {}
    return not envelope["status"] and data.get("kind") == ErrorKind.STRIPE_UNAVAILABLE


@dataclass(frozen=True)
class DeadLetter:
    job_id: str
    job: dict[str, Any]
    envelope: Envelope
    failed_at: float

    def to_json(self) -> str:
        return json.dumps(
            {
                "job_id": self.job_id,
                "job": self.job,
                "envelope": self.envelope,
                "failed_at": self.failed_at,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> DeadLetter:
        data = json.loads(raw)
        return cls(data["job_id"], data["job"], data["envelope"], float(data["failed_at"]))


class DeadLetterStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    @classmethod
    def from_url(cls, url: str) -> DeadLetterStore:
        return cls(redis_client(url, get_settings().sentinel_master))

    def add(self, letter: DeadLetter) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(ENTRIES_KEY, letter.job_id, letter.to_json())
        pipe.zadd(ORDER_KEY, {letter.job_id: letter.failed_at})
        pipe.execute()

    def oldest(self, limit: int | None = None) -> list[DeadLetter]:
        """Dead letters, oldest first."""
        ids = self._redis.zrange(ORDER_KEY, 0, -1 if limit is None else limit - 1)
        return self.get(i.decode() if isinstance(i, bytes) else str(i) for i in ids)

    def get(self, job_ids: Iterable[str]) -> list[DeadLetter]:
        ids = list(job_ids)
        if not ids:
            return []
        raws = self._redis.hmget(ENTRIES_KEY, ids)
        return [DeadLetter.from_json(raw) for raw in raws if raw is not None]

    def remove(self, job_ids: Iterable[str]) -> int:
        ids = list(job_ids)
        if not ids:
            return 0
        pipe = self._redis.pipeline(transaction=True)
        pipe.hdel(ENTRIES_KEY, *ids)
        pipe.zrem(ORDER_KEY, *ids)
        removed, _ = pipe.execute()
        return int(removed)

    def purge(self) -> int:
        count = int(self._redis.hlen(ENTRIES_KEY))
        self._redis.delete(ENTRIES_KEY, ORDER_KEY)
        return count

    def __len__(self) -> int:
        return int(self._redis.hlen(ENTRIES_KEY))

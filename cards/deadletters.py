"""Dead letters: jobs that failed only because of a cause outside the job.

A transient cause outlasted their retries, or the worker was misconfigured: such a job
is not wrong, only unlucky, so it is kept with its original fields and can be replayed
once the cause is gone, under the same job id (the same idempotency key, so a write
Stripe already applied is not applied again). The worker adds letters; ``cards dlq``
lists, replays and purges them. Invariants: the store never grows without bound (a
TTL and a maximum count), and a letter holds ids and the failure envelope, never
customer data. Redis layout: ``docs/internals.md``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import redis

from cards.envelope import Envelope, ErrorKind
from cards.redis_urls import redis_client
from cards.settings import Settings

__all__ = ["DeadLetter", "DeadLetterStore", "is_dead_letter"]

ENTRIES_KEY: Final = "cards:dlq:entries"
ORDER_KEY: Final = "cards:dlq:order"


#: Failures that say nothing about the job itself: replay it once the cause is fixed.
DEAD_LETTER_KINDS: Final = frozenset({ErrorKind.STRIPE_UNAVAILABLE, ErrorKind.MISCONFIGURED})


def is_dead_letter(envelope: Envelope) -> bool:
    """Did the job fail only because of Stripe's availability or the worker's configuration?"""
    data = envelope["data"] or {}
    return not envelope["status"] and data.get("kind") in DEAD_LETTER_KINDS


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
    def __init__(self, client: redis.Redis, *, ttl_seconds: int, max_entries: int) -> None:
        self._redis = client
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries

    @classmethod
    def from_settings(
        cls, settings: Settings, client: redis.Redis | None = None
    ) -> DeadLetterStore:
        """The store the settings describe, on ``client`` or a new client of its URL."""
        return cls(
            client or redis_client(settings.job_state_url, settings.sentinel_master),
            ttl_seconds=settings.dead_letter_ttl_seconds,
            max_entries=settings.dead_letter_max_entries,
        )

    def add(self, letter: DeadLetter) -> None:
        """Keep ``letter``; then drop the expired letters and the oldest beyond the cap."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(ENTRIES_KEY, letter.job_id, letter.to_json())
        pipe.zadd(ORDER_KEY, {letter.job_id: letter.failed_at})
        pipe.zrangebyscore(ORDER_KEY, "-inf", f"({letter.failed_at - self.ttl_seconds!r}")
        pipe.zrange(ORDER_KEY, 0, -(self.max_entries + 1))
        pipe.expire(ENTRIES_KEY, self.ttl_seconds)
        pipe.expire(ORDER_KEY, self.ttl_seconds)
        *_, expired, beyond, _, _ = pipe.execute()
        dropped = {i.decode() if isinstance(i, bytes) else str(i) for i in [*expired, *beyond]}
        self.remove(sorted(dropped))

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

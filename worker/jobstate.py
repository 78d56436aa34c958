"""Per-job retry state in Redis: attempts made, first attempt time, key generation.

It lives outside the Celery message so that a broker redelivery (after a worker
died) continues the count instead of starting over, and so that the key
generation survives every path back into the task. A job's state is deleted
when the job ends and otherwise expires after a day, with its idempotency keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import redis

from cards.redis_urls import redis_client
from cards.settings import IDEMPOTENCY_KEY_LIFETIME_SECONDS, get_settings

__all__ = ["AttemptState", "JobStateStore"]

KEY_PREFIX: Final = "cards:jobstate:"
#: State outlives the idempotency keys it describes by an hour of slack.
STATE_TTL_SECONDS: Final = IDEMPOTENCY_KEY_LIFETIME_SECONDS + 3600


@dataclass(frozen=True)
class AttemptState:
    """Where a job stands as one of its attempts begins."""

    attempt: int
    generation: int
    first_attempt_at: float


class JobStateStore:
    def __init__(self, client: redis.Redis, ttl_seconds: int = STATE_TTL_SECONDS) -> None:
        self._redis = client
        self._ttl = ttl_seconds

    @classmethod
    def from_url(cls, url: str) -> JobStateStore:
        return cls(redis_client(url, get_settings().sentinel_master))

    def begin_attempt(self, job_id: str, now: float) -> AttemptState:
        """Count a new attempt and read the state, in one round trip."""
        key = KEY_PREFIX + job_id
        pipe = self._redis.pipeline(transaction=True)
        pipe.hsetnx(key, "first_attempt_at", repr(now))
        pipe.hincrby(key, "attempts", 1)
        pipe.hmget(key, "generation", "first_attempt_at")
        pipe.expire(key, self._ttl)
        _, attempts, (generation, first), _ = pipe.execute()
        return AttemptState(
            attempt=int(attempts),
            generation=int(generation or 0),
            first_attempt_at=float(first),
        )

    def advance_generation(self, job_id: str, seen: int) -> None:
        """Move the job to key generation ``seen + 1``.

        Set, not incremented: two deliveries of the same attempt that both saw
        generation ``seen`` land on the same next generation.
        """
        self._redis.hset(KEY_PREFIX + job_id, "generation", seen + 1)

    def forget(self, job_id: str) -> None:
        self._redis.delete(KEY_PREFIX + job_id)

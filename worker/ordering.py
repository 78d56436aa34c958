"""Newest request wins, one writer per customer.

Two requests for one customer can reach two workers in the wrong order: a
customer switches cards twice in a second, or a migration job queued an hour
ago lands after the customer picked a new card in the app. Two rules keep the
newer request in place:

- **One writer per customer.** A job holds a Redis lock on its customer
  (``SET NX PX``, released by compare-and-delete) for the length of its
  attempt, so at most one write per customer is in flight across all workers,
  which also avoids Stripe's ``lock_timeout``. The lock expires on its own if
  its holder dies, after ``lock_seconds``. A job that finds the lock taken goes
  back to the queue for a moment, holding no worker slot.
- **Newest request wins.** Under the lock, the job compares its
  ``requested_at`` with the newest request already applied to that customer.
  An older one is not sent to Stripe: it ends "superseded by a newer request",
  naming the newer job. Equal times are ordered by job id, so the outcome does
  not depend on which worker ran first. A job sent without ``requested_at`` (a
  raw Celery message) counts as requested when a worker first runs it.

The record of the newest request lives ``max_job_age`` plus an hour; a job
older than ``max_job_age`` is refused as stale, since the record it would be
compared with may be gone.

Parameters:
    lock_seconds: how long a customer lock lives if its holder never releases it.
    max_job_age_seconds: jobs requested longer ago than this are refused as stale.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Final

import redis

__all__ = ["AppliedRequest", "CustomerGuard", "customer_key", "is_stale", "is_superseded"]

LOCK_PREFIX: Final = "cards:customer-lock:"
NEWEST_PREFIX: Final = "cards:customer-newest:"
#: The newest-request record outlives the oldest job that may still be compared with it.
RECORD_SLACK_SECONDS: Final = 3600

_RELEASE_LUA: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class AppliedRequest:
    """The newest request applied to a customer: when it was made, and its job."""

    requested_at: float
    job_id: str


def customer_key(customer: str, account: str | None) -> str:
    return f"{account or '-'}:{customer}"


def is_superseded(requested_at: float, job_id: str, newest: AppliedRequest | None) -> bool:
    """Is this request older than the newest one already applied? (Pure.)"""
    if newest is None or newest.job_id == job_id:
        return False
    return (requested_at, job_id) < (newest.requested_at, newest.job_id)


def is_stale(requested_at: float, now: float, max_age_seconds: float) -> bool:
    """Was this request made too long ago to be ordered safely? (Pure.)"""
    return now - requested_at > max_age_seconds


class CustomerGuard:
    """The Redis edge of the two rules: customer locks and newest-request records."""

    def __init__(
        self, client: redis.Redis, *, lock_seconds: float, max_job_age_seconds: float
    ) -> None:
        self._redis = client
        self._release = client.register_script(_RELEASE_LUA)
        self.lock_seconds = lock_seconds
        self.max_job_age_seconds = max_job_age_seconds

    def lock(self, key: str) -> str | None:
        """A token proving this caller holds the customer's lock, or None if another does."""
        token = secrets.token_hex(8)
        taken = self._redis.set(LOCK_PREFIX + key, token, nx=True, px=int(self.lock_seconds * 1000))
        return token if taken else None

    def unlock(self, key: str, token: str) -> None:
        """Release the lock if this token still holds it (it may have expired and moved on)."""
        self._release(keys=[LOCK_PREFIX + key], args=[token])

    def newest(self, key: str) -> AppliedRequest | None:
        requested_at, job_id = self._redis.hmget(NEWEST_PREFIX + key, "requested_at", "job_id")
        if requested_at is None or job_id is None:
            return None
        text = job_id.decode() if isinstance(job_id, bytes) else str(job_id)
        return AppliedRequest(float(requested_at), text)

    def record(self, key: str, applied: AppliedRequest) -> None:
        name = NEWEST_PREFIX + key
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(
            name, mapping={"requested_at": repr(applied.requested_at), "job_id": applied.job_id}
        )
        pipe.expire(name, int(self.max_job_age_seconds + RECORD_SLACK_SECONDS))
        pipe.execute()

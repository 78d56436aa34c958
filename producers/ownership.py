"""Which tenant a gateway job belongs to, and with which fields: the job-id claims.

A job id sent to the gateway is claimed before anything is queued:
``cards:job-owner:<job_id>`` holds ``{tenant, digest, sent}`` (``SET NX``),
where ``digest`` fingerprints the job's kind and fields. A second request
with the same id is the same job only if it comes from the same tenant with
the same digest; anything else is a conflict, answered before anything is
sent, read or deleted. ``sent`` turns true once the job is on the queue, so
a request that died between claim and send is sent by its repeat.

A claim lives as long as a job may wait plus its result
(``CARDS_MAX_JOB_AGE_SECONDS`` + ``CARDS_RESULT_EXPIRES_SECONDS``); reading
a job's status needs it. Jobs sent without the gateway have no claim: only an
``admin`` key reads them there.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

import redis

__all__ = ["KEY_PREFIX", "Claim", "ClaimOutcome", "JobOwners", "job_digest"]

KEY_PREFIX: Final = "cards:job-owner:"


def job_digest(task: str, fields: dict[str, Any]) -> str:
    """A fingerprint of a job's kind and fields (as the caller sent them). Pure."""
    canonical = json.dumps([task, fields], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Claim:
    tenant: str
    digest: str
    sent: bool = False

    def to_json(self) -> str:
        return json.dumps({"tenant": self.tenant, "digest": self.digest, "sent": self.sent})

    @classmethod
    def from_json(cls, raw: bytes | str) -> Claim:
        data = json.loads(raw)
        return cls(str(data["tenant"]), str(data["digest"]), bool(data.get("sent")))


class ClaimOutcome(Enum):
    NEW = "new"  # the id was free and is now this request's
    SAME = "same"  # the same tenant sent the same job before
    CONFLICT = "conflict"  # another tenant's, or other fields


class JobOwners:
    """The Redis edge of the claims."""

    def __init__(self, client: redis.Redis, ttl_seconds: int) -> None:
        self._redis = client
        self.ttl_seconds = ttl_seconds

    def claim(self, job_id: str, claim: Claim) -> tuple[ClaimOutcome, Claim]:
        """Claim ``job_id`` for ``claim``; the outcome and the claim now stored."""
        key = KEY_PREFIX + job_id
        if self._redis.set(key, claim.to_json(), nx=True, ex=self.ttl_seconds):
            return ClaimOutcome.NEW, claim
        raw = self._redis.get(key)
        if raw is None:  # expired in between: try once more
            return self.claim(job_id, claim)
        stored = Claim.from_json(raw)
        same = stored.tenant == claim.tenant and stored.digest == claim.digest
        return (ClaimOutcome.SAME if same else ClaimOutcome.CONFLICT), stored

    def mark_sent(self, job_id: str, claim: Claim, sent: bool = True) -> None:
        """Record that the claimed job is on the queue (or, ``sent=False``, about to be
        sent again, so that a repeat sends it if this request dies first)."""
        marked = Claim(claim.tenant, claim.digest, sent=sent)
        self._redis.set(KEY_PREFIX + job_id, marked.to_json(), xx=True, keepttl=True)

    def release(self, job_id: str, claim: Claim) -> None:
        """Drop a claim this request just made and did not use (never another's)."""
        key = KEY_PREFIX + job_id
        raw = self._redis.get(key)
        if raw is not None and Claim.from_json(raw) == claim:
            self._redis.delete(key)

    def owner(self, job_id: str) -> str | None:
        raw = self._redis.get(KEY_PREFIX + job_id)
        return None if raw is None else Claim.from_json(raw).tenant

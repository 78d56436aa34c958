"""Which tenant a gateway job belongs to, and with which fields: the job-id claims.

A job id is claimed (``SET NX`` on ``cards:job-owner:<job_id>``) before
anything is queued, read or deleted. A repeat is the same job only from the
same tenant with the same fields (digest); anything else is a conflict. A
claim records whether its job was sent, and lives as long as a job may wait
plus its result. Jobs sent without the gateway have no claim.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from cards.redis_urls import async_redis_client
from cards.settings import Settings
from producers.http.shedding import redis_pool_size

__all__ = ["KEY_PREFIX", "Claim", "ClaimOutcome", "JobOwners", "job_digest"]

KEY_PREFIX: Final = "cards:job-owner:"
#: A request waits at most this long on the claims' Redis (each command; an
#: ``asyncio.timeout``, cheaper than redis-py's socket timeout: no task per write).
REDIS_TIMEOUT_SECONDS: Final = 2


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
    """The Redis edge of the claims (asyncio: a claim costs the event loop no thread hop)."""

    def __init__(self, client: redis.asyncio.Redis, ttl_seconds: int) -> None:
        self._redis = client
        self.ttl_seconds = ttl_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> JobOwners:
        """The claims at ``CARDS_STATE_REDIS_URL`` (Sentinel URLs too), kept for
        ``CARDS_MAX_JOB_AGE_SECONDS`` + ``CARDS_RESULT_EXPIRES_SECONDS``."""
        client = async_redis_client(
            settings.job_state_url,
            settings.sentinel_master,
            socket_timeout=None,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            max_connections=redis_pool_size(settings.gateway_max_in_flight),
            # A connection Redis closed (a restart) is tried once more, on a new one:
            # every command here may run twice (a repeated claim reads as this one's).
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[redis.ConnectionError],
        )
        return cls(client, settings.max_job_age_seconds + settings.result_expires_seconds)

    async def claim(self, job_id: str, claim: Claim) -> tuple[ClaimOutcome, Claim]:
        """Claim ``job_id`` for ``claim``; the outcome and the claim now stored."""
        command = self.claim_command(job_id, claim)
        async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
            if await self._redis.execute_command(*command):  # type: ignore[no-untyped-call]
                return ClaimOutcome.NEW, claim
            raw = await self._redis.get(KEY_PREFIX + job_id)
        if raw is None:  # expired in between: try once more
            return await self.claim(job_id, claim)
        stored = Claim.from_json(raw)
        same = stored.tenant == claim.tenant and stored.digest == claim.digest
        return (ClaimOutcome.SAME if same else ClaimOutcome.CONFLICT), stored

    def claim_command(self, job_id: str, claim: Claim) -> tuple[str, ...]:
        """The Redis command of :meth:`claim` (``SET NX``, with the claims' lifetime), for
        a pipeline on the claims' Redis."""
        return ("SET", KEY_PREFIX + job_id, claim.to_json(), "NX", "EX", str(self.ttl_seconds))

    def sent_command(self, job_id: str, claim: Claim, sent: bool = True) -> tuple[str, ...]:
        """The Redis command of :meth:`mark_sent`, for a pipeline on the claims' Redis."""
        marked = Claim(claim.tenant, claim.digest, sent=sent)
        return ("SET", KEY_PREFIX + job_id, marked.to_json(), "XX", "KEEPTTL")

    async def mark_sent(self, job_id: str, claim: Claim, sent: bool = True) -> None:
        """Record that the claimed job is on the queue (or, ``sent=False``, about to be
        sent again, so that a repeat sends it if this request dies first)."""
        async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
            command = self.sent_command(job_id, claim, sent)
            await self._redis.execute_command(*command)  # type: ignore[no-untyped-call]

    async def release(self, job_id: str, claim: Claim) -> None:
        """Drop a claim this request just made and did not use (never another's)."""
        key = KEY_PREFIX + job_id
        async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
            raw = await self._redis.get(key)
            if raw is not None and Claim.from_json(raw) == claim:
                await self._redis.delete(key)

    async def owner(self, job_id: str) -> str | None:
        async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
            raw = await self._redis.get(KEY_PREFIX + job_id)
        return None if raw is None else Claim.from_json(raw).tenant

    async def close(self) -> None:
        await self._redis.aclose()

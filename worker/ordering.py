"""Newest request wins, one writer per customer: the rules and their Redis edge.

One writer: a job holds a Redis lock on its customer (``SET NX PX``, released
by compare-and-delete, expiring after ``lock_seconds``) for its attempt. An
attempt without a final answer (Stripe may still apply it) parks the lock for
the job's own retry instead of releasing it.
Newest wins: under the lock, a request older than the newest one applied to
the customer ends "superseded" without a Stripe call; equal times are ordered
by job id. A job without ``requested_at`` counts as requested when first run.
The newest-request record lives ``max_job_age`` plus an hour, so older jobs
are refused as stale. The step is :mod:`worker.middleware.customer_order`;
details: docs/worker.md.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import redis

from cards.customer_keys import customer_key, ordering_keys
from cards.lua_scripts import read_lua

__all__ = [
    "AppliedRequest",
    "CustomerGuard",
    "Entry",
    "Guard",
    "customer_key",
    "is_stale",
    "is_superseded",
]

#: The newest-request record outlives the oldest job that may still be compared with it.
RECORD_SLACK_SECONDS: Final = 3600

#: Take the customer's lock and read its newest applied request: one round trip.
_ENTER_LUA: Final = read_lua("worker", "customer_enter.lua")
#: Record the request just applied, then release the lock if the token still holds it.
_LEAVE_LUA: Final = read_lua("worker", "customer_leave.lua")
#: Hand the lock from the token to the job's retry.
_PARK_LUA: Final = read_lua("worker", "customer_park.lua")


@dataclass(frozen=True)
class AppliedRequest:
    """The newest request applied to a customer: when it was made, its job, the card it set."""

    requested_at: float
    job_id: str
    #: Kept so that a batch-api migration can re-apply a newer live request.
    source: str = ""


#: What entering a customer gives: the lock's token (None: another job holds it) and
#: the newest request applied to the customer so far.
Entry = tuple[str | None, AppliedRequest | None]


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
        self._enter = client.register_script(_ENTER_LUA)
        self._leave = client.register_script(_LEAVE_LUA)
        self._park = client.register_script(_PARK_LUA)
        self.lock_seconds = lock_seconds
        self.max_job_age_seconds = max_job_age_seconds

    # A single customer's enter and leave call their script directly (EVALSHA: one
    # round trip); a pipeline of scripts first asks SCRIPT EXISTS (one more), which
    # only a batch of customers makes worth it.

    def enter(self, key: str, job_id: str = "") -> Entry:
        """Take the customer's lock, or the lock parked for ``job_id``: (a token proving
        it, or None if another job holds it) and the newest request applied so far."""
        token = secrets.token_hex(8)
        args = self._enter_args(token, job_id)
        return _entry(token, self._enter(keys=ordering_keys(key), args=args))

    def enter_many(self, keys: Sequence[str]) -> list[Entry]:
        """:meth:`enter` for each of several customers (distinct keys), in one round trip."""
        tokens = [secrets.token_hex(8) for _ in keys]
        with self._redis.pipeline(transaction=False) as pipe:
            for key, token in zip(keys, tokens, strict=True):
                args = self._enter_args(token, "")
                self._enter(keys=ordering_keys(key), args=args, client=pipe)
            answers = pipe.execute()
        return [_entry(token, answer) for token, answer in zip(tokens, answers, strict=True)]

    def leave(self, key: str, token: str, applied: AppliedRequest | None = None) -> None:
        """Record ``applied`` as the customer's newest request, then release the lock."""
        self._leave(keys=ordering_keys(key), args=self._leave_args(token, applied))

    def leave_many(self, leaves: Sequence[tuple[str, str, AppliedRequest | None]]) -> None:
        """:meth:`leave` for each (key, token, applied), in one round trip."""
        if not leaves:
            return
        with self._redis.pipeline(transaction=False) as pipe:
            for key, token, applied in leaves:
                args = self._leave_args(token, applied)
                self._leave(keys=ordering_keys(key), args=args, client=pipe)
            pipe.execute()

    def park(self, key: str, token: str, job_id: str, seconds: float) -> None:
        """Keep the customer locked for ``seconds`` for ``job_id``'s retry alone."""
        self._park(keys=ordering_keys(key)[:1], args=[token, job_id, int(seconds * 1000)])

    def _enter_args(self, token: str, job_id: str) -> list[str | int]:
        return [token, int(self.lock_seconds * 1000), job_id]

    def _leave_args(self, token: str, applied: AppliedRequest | None) -> list[str | int]:
        return [
            token,
            repr(applied.requested_at) if applied else "",
            applied.job_id if applied else "",
            int(self.max_job_age_seconds + RECORD_SLACK_SECONDS),
            applied.source if applied else "",
        ]


def _entry(token: str, answer: list[Any]) -> Entry:
    if not int(answer[0]):
        return None, None
    requested_at, job_id = [*answer, None, None][1:3]
    if not requested_at or not job_id:
        return token, None
    text = job_id.decode() if isinstance(job_id, bytes) else str(job_id)
    return token, AppliedRequest(float(requested_at), text)


class Guard(Protocol):
    """What a runner needs of the customer guard (:class:`CustomerGuard`, or a bulk
    batch's view of it, :class:`worker.batches.BatchGuard`)."""

    max_job_age_seconds: float
    lock_seconds: float

    def enter(self, key: str, job_id: str = "") -> Entry: ...

    def leave(self, key: str, token: str, applied: AppliedRequest | None = None) -> None: ...

    def park(self, key: str, token: str, job_id: str, seconds: float) -> None: ...

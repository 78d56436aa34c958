"""Customer order: one writer per customer, and the newest request wins.

Before the attempt the job is refused as stale if it is older than the guard's
``max_job_age``, waits (back to the queue) while another job holds its
customer, and ends "superseded" if a newer request was applied already. After
the attempt the lock is released and, if the job succeeded, its request is
recorded as the customer's newest; if the attempt got no final answer (Stripe
may still apply it), the lock is parked for the job's retry instead
(:func:`park_seconds`), so no later request can be overtaken by it. The rules
and their Redis edge are :mod:`worker.ordering`; a bulk batch plugs in its own
guard (:class:`worker.batches.BatchGuard`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

import redis

from cards.envelope import ErrorKind, failure
from worker.errors import StripeCallError
from worker.ordering import AppliedRequest, Guard, customer_key, is_stale, is_superseded
from worker.pipeline import Attempted, JobCall, Outcome, RetryLater, Step
from worker.retry_policy import RetryPolicy

__all__ = ["CUSTOMER_BUSY_COUNTDOWN_SECONDS", "CustomerOrder", "park_seconds"]

logger = logging.getLogger(__name__)

#: A job whose customer is being written by another job comes back this much later.
CUSTOMER_BUSY_COUNTDOWN_SECONDS: Final = 1


def park_seconds(
    error: StripeCallError | None, outcome: Attempted, lock_seconds: float
) -> float | None:
    """How long to keep the customer locked for the job's retry (None: release it). (Pure.)

    Only an attempt whose request may still be applied parks: until the retry
    comes (its countdown) and runs (``lock_seconds``). A job that gave up keeps
    the customer for ``lock_seconds``, as if its worker had died."""
    if error is None or not error.outcome_unknown:
        return None
    return lock_seconds + (outcome.countdown if isinstance(outcome, RetryLater) else 0)


class CustomerOrder(Step):
    def __init__(
        self, guard: Guard, policy: RetryPolicy, clock: Callable[[], float] = time.time
    ) -> None:
        self.guard = guard
        self.policy = policy
        self.clock = clock

    def before_attempt(self, call: JobCall) -> Outcome | None:
        now = self.clock()
        requested_at = call.job.requested_at.timestamp() if call.job.requested_at else now
        if is_stale(requested_at, now, self.guard.max_job_age_seconds):
            return failure(
                f"request is older than {self.guard.max_job_age_seconds:.0f} s; not applied",
                ErrorKind.STALE,
            )
        key = customer_key(call.job.userId, call.job.stripe_account)
        try:
            token, newest = self.guard.enter(key, call.job_id)
        except redis.RedisError:
            return RetryLater(self.policy.countdown(1), "state_store")
        if token is None:
            return RetryLater(CUSTOMER_BUSY_COUNTDOWN_SECONDS, "customer_busy")
        call.customer_hold = (key, token, requested_at)
        if is_superseded(requested_at, call.job_id, newest):
            assert newest is not None
            return failure(
                "superseded by a newer request",
                ErrorKind.SUPERSEDED,
                extra={"newer_job_id": newest.job_id},
            )
        return None

    def after_attempt(self, call: JobCall, outcome: Attempted) -> Attempted:
        if call.customer_hold is None:
            return outcome
        key, token, requested_at = call.customer_hold
        call.customer_hold = None
        parked = park_seconds(call.error, outcome, self.guard.lock_seconds)
        if parked is not None:
            try:
                self.guard.park(key, token, call.job_id, parked)
            except redis.RedisError:
                # The lock stays with the token until it expires: the same protection.
                logger.error("customer %s: could not park its lock for the job's retry", key)
            return outcome
        applied = None
        if isinstance(outcome, dict) and outcome["status"]:
            applied = AppliedRequest(requested_at, call.job_id, call.job.default_source)
        try:
            self.guard.leave(key, token, applied)
        except redis.RedisError:
            # The lock expires on its own. A lost record only matters if an
            # older request for this customer arrives later.
            logger.error("customer %s: could not record its newest request or unlock", key)
        return outcome

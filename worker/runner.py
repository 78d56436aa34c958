"""One attempt of a ``set_default_card`` job, as decisions over injected edges.

The runner knows nothing of Celery: it gets a validated job, talks to Stripe
through a :class:`~worker.gateway.StripeGateway` and keeps per-job state in a
:class:`~worker.jobstate.JobStateStore`. It answers either a final
:class:`~cards.envelope.Envelope` or :class:`RetryLater`.

After a saved 5xx (see :mod:`worker.idempotency`) we **reconcile, then move to
a new key generation**: the next attempt first re-reads the customer. If the
requested default is already in place, the earlier call was applied before it
failed, and the job succeeds with the customer as read, without a second
write. Otherwise it writes under the next generation's key. Either way, one
job applies at most one write. Reconciling alone would leave a job whose first
call failed before applying stuck on a replayed 500; a new key alone would
apply a second write whenever the 500 came after the change.

The bookkeeping (state, retry or give up, the failure envelope) is
:class:`JobRunner`'s and is shared by every job; a job brings only its
attempt, a function of the key generation (see :mod:`worker.companion`).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis

from cards.envelope import Envelope, ErrorKind, failure, success
from cards.jobs import SetDefaultCardJob, TargetField
from cards.rate_table import RateTable, limit_for
from cards.redaction import redact_customer
from worker.errors import (
    Misconfigured,
    NoApiKey,
    PermanentError,
    StripeRateLimited,
    TransientError,
)
from worker.gateway import StripeGateway
from worker.idempotency import idempotency_key
from worker.jobstate import AttemptState, JobStateStore
from worker.metrics import RATE_LIMITER_WAIT
from worker.ordering import (
    AppliedRequest,
    Guard,
    customer_key,
    is_stale,
    is_superseded,
)
from worker.ratelimit import RateLimiter, limiter_key
from worker.retries import RetryPolicy

__all__ = ["Budget", "JobRunner", "RetryLater", "SetDefaultCardRunner", "already_applied"]

logger = logging.getLogger(__name__)

#: A job whose customer is being written by another job comes back this much later.
CUSTOMER_BUSY_COUNTDOWN_SECONDS = 1

#: What one attempt returns (Stripe's answer) and what the job ends with.
AnswerT = TypeVar("AnswerT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class RetryLater:
    """Run the job again in ``countdown`` seconds; ``cause`` says why, for the log."""

    countdown: int
    reason: str
    cause: str = ""


def already_applied(customer: dict[str, Any], job: SetDefaultCardJob) -> bool:
    """Does Stripe's customer already have the job's card as its default?"""
    if job.target is TargetField.DEFAULT_PAYMENT_METHOD:
        settings = customer.get("invoice_settings") or {}
        return bool(settings.get("default_payment_method") == job.default_source)
    return bool(customer.get("default_source") == job.default_source)


@dataclass(frozen=True)
class Budget:
    """The shared Stripe rate limit a job's calls count against."""

    queue: str
    key: str
    rate: float


class JobRunner:
    """One attempt of any job: rate limit, per-job state, retry or give up, failure envelope."""

    def __init__(
        self,
        store: JobStateStore,
        policy: RetryPolicy,
        clock: Callable[[], float] = time.time,
        *,
        limiter: RateLimiter | None = None,
        rates: RateTable | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.limiter = limiter
        self.rates = rates or {}
        self.sleep = sleep

    def budget(self, queue: str, account: str | None) -> Budget | None:
        """The budget for a job on ``queue`` for Stripe ``account``; None when unlimited."""
        rate = limit_for(self.rates, queue, account)
        if rate is None or self.limiter is None:
            return None
        return Budget(queue, limiter_key(queue, account), rate)

    def _wait_for_budget(self, budget: Budget) -> RetryLater | None:
        """Sleep for a token; or :class:`RetryLater` if the wait would hold the slot too long."""
        assert self.limiter is not None
        try:
            permit = self.limiter.acquire(budget.key, budget.rate)
        except redis.RedisError:
            # Without the shared budget, calling Stripe could break it for every worker.
            return RetryLater(self.policy.countdown(1), "state_store")
        if not permit.go:
            return RetryLater(max(1, math.ceil(permit.wait)), "rate_limiter")
        RATE_LIMITER_WAIT.labels(budget.queue).observe(permit.wait)
        if permit.wait > 0:
            self.sleep(permit.wait)
        return None

    def run_attempt(
        self,
        job_id: str,
        attempt: Callable[[int], AnswerT],
        on_success: Callable[[AnswerT], ResultT],
        *,
        first_delivery: bool = False,
        budget: Budget | None = None,
    ) -> ResultT | Envelope | RetryLater:
        """One attempt. ``attempt(generation)`` calls Stripe, raising the
        classified errors of :mod:`worker.errors`; ``on_success`` makes its
        answer the job's result. ``first_delivery``: the job has not been
        retried before.

        A first delivery skips the state store until something fails: nearly
        every job succeeds at once and needs no state. A redelivered first
        attempt (its worker died) then starts at key generation 0; if that
        key holds a saved 5xx, the replay leads back here and on to the
        recorded generation, one attempt later.

        With a ``budget``, the attempt first takes a token from the shared rate
        limiter (a job sent back for want of one has made no attempt), and a
        429 ``rate_limit`` from Stripe slows that limiter down.
        """
        if budget is not None:
            deferred = self._wait_for_budget(budget)
            if deferred is not None:
                return deferred
        now = self.clock()
        state: AttemptState | None = None
        if not first_delivery:
            try:
                state = self.store.begin_attempt(job_id, now)
            except redis.RedisError:
                # Nothing was sent to Stripe; try again once the state store is back.
                return RetryLater(self.policy.countdown(1), "state_store")
        generation = state.generation if state else 0
        try:
            answer = attempt(generation)
        except TransientError as exc:
            if budget is not None and isinstance(exc, StripeRateLimited):
                self._throttle(budget)
            return self._after_transient(job_id, exc, state, now, generation)
        except PermanentError as exc:
            if isinstance(exc, Misconfigured):
                logger.critical("job %s: %s", job_id, exc.message)
            if state:
                self._forget(job_id)
            attempts = state.attempt if state else 1
            return failure(
                exc.message,
                exc.kind,
                code=exc.code,
                param=exc.param,
                request_id=exc.request_id,
                # Without a key no call was made; earlier attempts, if any, still count.
                attempts=attempts - 1 if isinstance(exc, NoApiKey) else attempts,
            )
        if state:
            self._forget(job_id)
        return on_success(answer)

    def _after_transient(
        self,
        job_id: str,
        exc: TransientError,
        state: AttemptState | None,
        now: float,
        generation: int,
    ) -> Envelope | RetryLater:
        try:
            if state is None:
                state = self.store.begin_attempt(job_id, now)
            if exc.response_saved:
                self.store.advance_generation(job_id, generation)
        except redis.RedisError:
            # Without the state the next attempt may replay a saved 5xx and land
            # here again: the job is late, not wrong.
            logger.warning("job %s: could not record its retry state", job_id)
        attempt = state.attempt if state else 1
        first_attempt_at = state.first_attempt_at if state else now
        countdown = self.policy.countdown(attempt)
        if self.policy.gives_up(attempt, first_attempt_at, now, countdown):
            self._forget(job_id)
            return failure(
                f"Stripe unavailable, gave up after {attempt} attempts (last: {exc.message})",
                ErrorKind.STRIPE_UNAVAILABLE,
                code=exc.code or exc.reason,
                param=exc.param,
                request_id=exc.request_id,
                attempts=attempt,
            )
        return RetryLater(countdown, exc.reason, exc.message)

    def _throttle(self, budget: Budget) -> None:
        assert self.limiter is not None
        try:
            rate = self.limiter.throttled(budget.key, budget.rate)
        except redis.RedisError:
            logger.warning("rate limiter %s: could not slow down after a 429", budget.key)
            return
        logger.warning("rate limiter %s: Stripe answered 429, now %.2f/s", budget.key, rate)

    def _forget(self, job_id: str) -> None:
        try:
            self.store.forget(job_id)
        except redis.RedisError:
            # The state expires on its own; the job's outcome stands.
            logger.warning("job %s: could not delete its retry state", job_id)


class SetDefaultCardRunner(JobRunner):
    """``set_default_card``'s attempt: one writer per customer, newest request wins
    (see :mod:`worker.ordering`), reconcile after a saved 5xx, then write."""

    def __init__(
        self,
        gateway: StripeGateway,
        store: JobStateStore,
        policy: RetryPolicy,
        clock: Callable[[], float] = time.time,
        *,
        guard: Guard | None = None,
        limiter: RateLimiter | None = None,
        rates: RateTable | None = None,
        sleep: Callable[[float], None] = time.sleep,
        minimal_data: bool = False,
    ) -> None:
        super().__init__(store, policy, clock, limiter=limiter, rates=rates, sleep=sleep)
        self.gateway = gateway
        self.guard = guard
        self.minimal_data = minimal_data

    def with_guard(self, guard: Guard) -> SetDefaultCardRunner:
        """This runner, its jobs ordered by ``guard`` instead (a bulk batch's view)."""
        other = copy.copy(self)
        other.guard = guard
        return other

    def _success(self, customer: dict[str, Any]) -> Envelope:
        return success(redact_customer(customer, self.minimal_data))

    def run(
        self,
        job: SetDefaultCardJob,
        job_id: str,
        *,
        first_delivery: bool = False,
        budget: Budget | None = None,
    ) -> Envelope | RetryLater:
        """One attempt of a ``set_default_card`` job (see :meth:`JobRunner.run_attempt`)."""

        def attempt() -> Envelope | RetryLater:
            return self.run_attempt(
                job_id,
                lambda generation: self._attempt(job, job_id, generation),
                self._success,
                first_delivery=first_delivery,
                budget=budget,
            )

        if self.guard is None:
            return attempt()
        return self._in_order(self.guard, job, job_id, attempt, first_delivery)

    def _in_order(
        self,
        guard: Guard,
        job: SetDefaultCardJob,
        job_id: str,
        attempt: Callable[[], Envelope | RetryLater],
        first_delivery: bool,
    ) -> Envelope | RetryLater:
        now = self.clock()
        requested_at = job.requested_at.timestamp() if job.requested_at else now
        if is_stale(requested_at, now, guard.max_job_age_seconds):
            return failure(
                f"request is older than {guard.max_job_age_seconds:.0f} s; not applied",
                ErrorKind.STALE,
            )
        key = customer_key(job.userId, job.stripe_account)
        try:
            token, newest = guard.enter(key)
        except redis.RedisError:
            return RetryLater(self.policy.countdown(1), "state_store")
        if token is None:
            return RetryLater(CUSTOMER_BUSY_COUNTDOWN_SECONDS, "customer_busy")
        applied: AppliedRequest | None = None
        try:
            if is_superseded(requested_at, job_id, newest):
                assert newest is not None
                if not first_delivery:
                    self._forget(job_id)
                return failure(
                    "superseded by a newer request",
                    ErrorKind.SUPERSEDED,
                    extra={"newer_job_id": newest.job_id},
                )
            outcome = attempt()
            if isinstance(outcome, dict) and outcome["status"]:
                applied = AppliedRequest(requested_at, job_id)
            return outcome
        finally:
            self._leave(guard, key, token, applied)

    @staticmethod
    def _leave(guard: Guard, key: str, token: str, applied: AppliedRequest | None) -> None:
        try:
            guard.leave(key, token, applied)
        except redis.RedisError:
            # The lock expires on its own. A lost record only matters if an
            # older request for this customer arrives later.
            logger.error("customer %s: could not record its newest request or unlock", key)

    def _attempt(self, job: SetDefaultCardJob, job_id: str, generation: int) -> dict[str, Any]:
        if generation > 0:
            customer = self.gateway.retrieve_customer(job)
            if already_applied(customer, job):
                return customer
        return self.gateway.set_default(job, idempotency_key(job_id, generation))

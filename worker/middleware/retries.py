"""Retries: per-job attempt state, and what a Stripe failure makes of the job.

The innermost step. A first delivery skips the state store until something
fails (nearly every job succeeds at once); any other delivery counts an
attempt and reads its key generation first. A transient failure is retried
with backoff until the policy gives up; a saved 5xx moves the job to the next
key generation (see :mod:`worker.idempotency`); a permanent failure is the
job's answer at once. The state is deleted once the job has its answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from cards.envelope import ErrorKind, failure
from worker.errors import Misconfigured, NoApiKey, PermanentError, TransientError
from worker.jobstate import JobStateStore
from worker.pipeline import Answer, Attempted, JobCall, Outcome, RetryLater, Step
from worker.retry_policy import RetryPolicy

__all__ = ["Retries"]

logger = logging.getLogger(__name__)


class Retries(Step):
    def __init__(
        self, store: JobStateStore, policy: RetryPolicy, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock

    def before_attempt(self, call: JobCall) -> Outcome | None:
        if call.delivery.first:
            return None
        try:
            call.attempt_state = self.store.begin_attempt(call.job_id, self.clock())
        except redis.RedisError:
            # Nothing was sent to Stripe; try again once the state store is back.
            return RetryLater(self.policy.countdown(1), "state_store")
        call.generation = call.attempt_state.generation
        return None

    def after_attempt(self, call: JobCall, outcome: Attempted) -> Attempted:
        if isinstance(outcome, TransientError):
            return self._after_transient(call, outcome)
        if isinstance(outcome, PermanentError):
            return self._after_permanent(call, outcome)
        return outcome

    def after_job(self, call: JobCall, answer: Answer) -> None:
        if call.attempt_state is not None or (call.job is not None and not call.delivery.first):
            self._forget(call.job_id)

    def _after_permanent(self, call: JobCall, exc: PermanentError) -> Answer:
        if isinstance(exc, Misconfigured):
            logger.critical("job %s: %s", call.job_id, exc.message)
        attempts = call.attempt_state.attempt if call.attempt_state else 1
        return failure(
            exc.message,
            exc.kind,
            code=exc.code,
            param=exc.param,
            request_id=exc.request_id,
            # Without a key no call was made; earlier attempts, if any, still count.
            attempts=attempts - 1 if isinstance(exc, NoApiKey) else attempts,
        )

    def _after_transient(self, call: JobCall, exc: TransientError) -> Outcome:
        now = self.clock()
        state = call.attempt_state
        try:
            if state is None:
                state = call.attempt_state = self.store.begin_attempt(call.job_id, now)
            if exc.response_saved:
                self.store.advance_generation(call.job_id, call.generation)
        except redis.RedisError:
            # Without the state the next attempt may replay a saved 5xx and land
            # here again: the job is late, not wrong.
            logger.warning("job %s: could not record its retry state", call.job_id)
        attempt = state.attempt if state else 1
        first_attempt_at = state.first_attempt_at if state else now
        countdown = self.policy.countdown(attempt)
        if self.policy.gives_up(attempt, first_attempt_at, now, countdown):
            return failure(
                f"Stripe unavailable, gave up after {attempt} attempts (last: {exc.message})",
                ErrorKind.STRIPE_UNAVAILABLE,
                code=exc.code or exc.reason,
                param=exc.param,
                request_id=exc.request_id,
                attempts=attempt,
            )
        return RetryLater(countdown, exc.reason, exc.message)

    def _forget(self, job_id: str) -> None:
        try:
            self.store.forget(job_id)
        except redis.RedisError:
            # The state expires on its own; the job's outcome stands.
            logger.warning("job %s: could not delete its retry state", job_id)

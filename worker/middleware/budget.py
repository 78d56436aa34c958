"""Budget: every Stripe call takes a token from the shared rate limiter first.

The budget is that of the job's queue and Stripe account
(:data:`~cards.settings.Settings.rate_table`); a job sent back for want of a
token has made no attempt. A 429 ``rate_limit`` from Stripe slows the
limiter down for every worker. Without the state store the job waits: calling
Stripe outside the budget could break it for everyone.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import redis

from cards.rate_table import RateTable, limit_for
from worker.errors import StripeRateLimited
from worker.metrics import RATE_LIMITER_WAIT
from worker.pipeline import Attempted, JobCall, Outcome, RetryLater, Step
from worker.ratelimit import RateLimiter, limiter_key
from worker.retry_policy import RetryPolicy

__all__ = ["Budget"]

logger = logging.getLogger(__name__)


class Budget(Step):
    def __init__(
        self,
        limiter: RateLimiter,
        rates: RateTable,
        policy: RetryPolicy,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limiter = limiter
        self.rates = rates
        self.policy = policy
        self.sleep = sleep

    def _key(self, call: JobCall) -> tuple[str, float] | None:
        rate = limit_for(self.rates, call.delivery.queue, call.job.stripe_account)
        if rate is None:
            return None
        return limiter_key(call.delivery.queue, call.job.stripe_account), rate

    def before_attempt(self, call: JobCall) -> Outcome | None:
        budget = self._key(call)
        if budget is None:
            return None
        try:
            permit = self.limiter.acquire(*budget)
        except redis.RedisError:
            return RetryLater(self.policy.countdown(1), "state_store")
        if not permit.go:
            return RetryLater(max(1, math.ceil(permit.wait)), "rate_limiter")
        RATE_LIMITER_WAIT.labels(call.delivery.queue).observe(permit.wait)
        if permit.wait > 0:
            self.sleep(permit.wait)
        return None

    def after_attempt(self, call: JobCall, outcome: Attempted) -> Attempted:
        budget = self._key(call)
        if budget is not None and isinstance(call.error, StripeRateLimited):
            key, rate = budget
            try:
                slower = self.limiter.throttled(key, rate)
            except redis.RedisError:
                logger.warning("rate limiter %s: could not slow down after a 429", key)
            else:
                logger.warning("rate limiter %s: Stripe answered 429, now %.2f/s", key, slower)
        return outcome

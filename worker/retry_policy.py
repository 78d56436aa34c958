"""When to try a job again, and when to give up: pure functions over numbers.

Parameters (all from :class:`cards.settings.Settings`):
    max_attempts: Stripe attempts per job before it fails as "Stripe unavailable".
    backoff_seconds: base of the exponential backoff (attempt n waits up to base·2^(n-1)).
    backoff_max_seconds: cap of one countdown; kept below half the broker's
        visibility timeout, or Redis would redeliver the waiting job.
    window_seconds: total time from a job's first attempt during which it may
        retry; under 24 h, the lifetime of a Stripe idempotency key.
"""

from __future__ import annotations

from dataclasses import dataclass

from celery.utils.time import get_exponential_backoff_interval

from cards.settings import Settings

__all__ = ["RetryPolicy"]

#: Full jitter may draw 0; a retry that fires at once would hit the same
#: rate limit or lock again, so every countdown is at least this long.
MIN_COUNTDOWN_SECONDS = 1


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff_seconds: int
    backoff_max_seconds: int
    window_seconds: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_attempts=settings.retry_max_attempts,
            backoff_seconds=settings.retry_backoff_seconds,
            backoff_max_seconds=settings.retry_backoff_max_seconds,
            window_seconds=settings.retry_window_seconds,
        )

    def countdown(self, attempt: int) -> int:
        """Seconds to wait after failed attempt number ``attempt`` (1-based), with full jitter."""
        drawn = get_exponential_backoff_interval(
            factor=self.backoff_seconds,
            retries=attempt - 1,
            maximum=self.backoff_max_seconds,
            full_jitter=True,
        )
        return max(MIN_COUNTDOWN_SECONDS, drawn)

    def gives_up(self, attempt: int, first_attempt_at: float, now: float, countdown: int) -> bool:
        """True when attempt ``attempt`` was the last one this job may make."""
        if attempt >= self.max_attempts:
            return True
        return (now + countdown) - first_attempt_at > self.window_seconds

"""After one callback attempt: delivered, try again (when?), or give up. A pure function.

2xx is delivered. No answer, 429 and 5xx are tried again after exponential
backoff with full jitter, or the receiver's ``Retry-After``, both capped. 410,
3xx (never followed), other 4xx and a refused destination are failures, not
retried. It gives up once ``CARDS_CALLBACK_MAX_ATTEMPTS`` or
``CARDS_CALLBACK_WINDOW_SECONDS`` run out. The table: docs/worker.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

from cards.deliveries import DeliveryState
from cards.settings import Settings
from worker.retry_policy import RetryPolicy

__all__ = ["AttemptOutcome", "Decision", "callback_retry_policy", "decide", "retry_after_seconds"]


@dataclass(frozen=True)
class AttemptOutcome:
    """What one HTTP attempt came to."""

    status: int | None = None  # the receiver's status; None when it did not answer
    error: str | None = None  # why there was no answer ("connection failed (ConnectError)")
    refused: str | None = None  # why the SSRF rules refused the destination
    retry_after: str | None = None  # the Retry-After header, verbatim


@dataclass(frozen=True)
class Decision:
    state: DeliveryState
    countdown: int | None = None  # seconds before the next attempt (PENDING only)
    error: str | None = None  # why it is not delivered, for the record


def callback_retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.callback_max_attempts,
        backoff_seconds=settings.callback_backoff_seconds,
        backoff_max_seconds=settings.callback_backoff_cap_seconds,
        window_seconds=settings.callback_window_seconds,
    )


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (0 for a past date); None if unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _describe(outcome: AttemptOutcome) -> str:
    if outcome.status is not None:
        return f"HTTP {outcome.status}"
    return outcome.error or "no answer"


def decide(
    outcome: AttemptOutcome,
    attempt: int,
    started_at: float,
    now: float,
    policy: RetryPolicy,
    backoff: int,
) -> Decision:
    """What to do after attempt number ``attempt`` (1-based) of a callback.

    ``started_at`` is when the job finished (the window's start), ``now`` this
    attempt's end, and ``backoff`` the jittered countdown drawn for this
    attempt (``policy.countdown(attempt)``), passed in so that the decision
    itself is deterministic.
    """
    if outcome.refused is not None:
        return Decision(DeliveryState.FAILED, error=f"refused: {outcome.refused}")
    status = outcome.status
    if status is not None and 200 <= status < 300:
        return Decision(DeliveryState.DELIVERED)
    if status is not None and 300 <= status < 400:
        return Decision(DeliveryState.FAILED, error=f"redirect not followed (HTTP {status})")
    if status == 410:
        return Decision(DeliveryState.FAILED, error="gone (HTTP 410): the receiver asked to stop")
    if status is not None and status != 429 and status < 500:
        return Decision(DeliveryState.FAILED, error=f"refused by the receiver (HTTP {status})")
    countdown = backoff
    asked = retry_after_seconds(outcome.retry_after, now)
    if asked is not None:
        countdown = math.ceil(asked)
    countdown = max(1, min(countdown, policy.backoff_max_seconds))
    last = _describe(outcome)
    if policy.gives_up(attempt, started_at, now, countdown):
        noun = "attempt" if attempt == 1 else "attempts"
        error = f"gave up after {attempt} {noun} (last: {last})"
        return Decision(DeliveryState.FAILED, error=error)
    return Decision(DeliveryState.PENDING, countdown=countdown, error=last)

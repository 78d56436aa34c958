"""After one callback attempt: delivered, retry (after how long), or give up. Tables."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from cards.deliveries import DeliveryState
from cards.settings import Settings
from worker.callback_policy import (
    AttemptOutcome,
    Decision,
    callback_retry_policy,
    decide,
    retry_after_seconds,
)
from worker.retry_policy import RetryPolicy

NOW = 1_700_000_000.0
POLICY = RetryPolicy(max_attempts=5, backoff_seconds=2, backoff_max_seconds=60, window_seconds=600)
PENDING, DELIVERED, FAILED = DeliveryState.PENDING, DeliveryState.DELIVERED, DeliveryState.FAILED
HTTP_DATE_IN_30S = format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True)


@pytest.mark.parametrize(
    ("outcome", "attempt", "elapsed", "expected"),
    [
        # Delivered.
        (AttemptOutcome(status=200), 1, 0, Decision(DELIVERED)),
        (AttemptOutcome(status=204), 3, 0, Decision(DELIVERED)),
        # Transient: retried after the drawn backoff (7 here).
        (AttemptOutcome(status=503), 1, 0, Decision(PENDING, 7, "HTTP 503")),
        (AttemptOutcome(status=500), 2, 0, Decision(PENDING, 7, "HTTP 500")),
        (AttemptOutcome(status=429), 1, 0, Decision(PENDING, 7, "HTTP 429")),
        (
            AttemptOutcome(error="connection failed (ConnectError)"),
            1,
            0,
            Decision(PENDING, 7, "connection failed (ConnectError)"),
        ),
        (
            AttemptOutcome(error="timed out (ReadTimeout)"),
            1,
            0,
            Decision(PENDING, 7, "timed out (ReadTimeout)"),
        ),
        # Retry-After wins over the backoff, in seconds or as an HTTP date, capped.
        (AttemptOutcome(status=429, retry_after="20"), 1, 0, Decision(PENDING, 20, "HTTP 429")),
        (AttemptOutcome(status=503, retry_after="0"), 1, 0, Decision(PENDING, 1, "HTTP 503")),
        (
            AttemptOutcome(status=503, retry_after=HTTP_DATE_IN_30S),
            1,
            0,
            Decision(PENDING, 30, "HTTP 503"),
        ),
        (AttemptOutcome(status=429, retry_after="86400"), 1, 0, Decision(PENDING, 60, "HTTP 429")),
        (AttemptOutcome(status=503, retry_after="soon"), 1, 0, Decision(PENDING, 7, "HTTP 503")),
        # Permanent.
        (
            AttemptOutcome(status=410),
            1,
            0,
            Decision(FAILED, None, "gone (HTTP 410): the receiver asked to stop"),
        ),
        (
            AttemptOutcome(status=400),
            1,
            0,
            Decision(FAILED, None, "refused by the receiver (HTTP 400)"),
        ),
        (
            AttemptOutcome(status=401),
            2,
            0,
            Decision(FAILED, None, "refused by the receiver (HTTP 401)"),
        ),
        (
            AttemptOutcome(status=404),
            1,
            0,
            Decision(FAILED, None, "refused by the receiver (HTTP 404)"),
        ),
        (
            AttemptOutcome(status=302),
            1,
            0,
            Decision(FAILED, None, "redirect not followed (HTTP 302)"),
        ),
        (
            AttemptOutcome(status=307),
            1,
            0,
            Decision(FAILED, None, "redirect not followed (HTTP 307)"),
        ),
        (
            AttemptOutcome(refused="callback_url host resolves to a private address (10.0.0.1)"),
            1,
            0,
            Decision(
                FAILED, None, "refused: callback_url host resolves to a private address (10.0.0.1)"
            ),
        ),
        # Out of attempts, or the next attempt would fall outside the window.
        (
            AttemptOutcome(status=503),
            5,
            0,
            Decision(FAILED, None, "gave up after 5 attempts (last: HTTP 503)"),
        ),
        (
            AttemptOutcome(status=503),
            2,
            595,
            Decision(FAILED, None, "gave up after 2 attempts (last: HTTP 503)"),
        ),
        (AttemptOutcome(status=503), 2, 590, Decision(PENDING, 7, "HTTP 503")),
        (
            AttemptOutcome(status=429, retry_after="50"),
            2,
            560,
            Decision(FAILED, None, "gave up after 2 attempts (last: HTTP 429)"),
        ),
        (AttemptOutcome(status=200), 5, 10_000, Decision(DELIVERED)),
    ],
)
def test_decision_table(
    outcome: AttemptOutcome, attempt: int, elapsed: float, expected: Decision
) -> None:
    assert decide(outcome, attempt, NOW - elapsed, NOW, POLICY, backoff=7) == expected


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("120", 120.0),
        (" 5 ", 5.0),
        ("-5", None),
        ("1.5", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past
        (HTTP_DATE_IN_30S, 30.0),
        ("not a date", None),
    ],
)
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header, NOW) == seconds


def test_countdowns_stay_under_half_the_visibility_timeout() -> None:
    settings = Settings(visibility_timeout_seconds=4, retry_backoff_max_seconds=2)
    policy = callback_retry_policy(settings)
    assert policy.backoff_max_seconds == 2
    assert max(policy.countdown(n) for n in range(1, 12) for _ in range(50)) <= 2
    long = decide(AttemptOutcome(status=429, retry_after="3600"), 1, NOW, NOW, policy, backoff=1)
    assert long.countdown == 2
    default = callback_retry_policy(Settings())
    assert default.backoff_max_seconds == 600
    assert default.max_attempts == 10 and default.window_seconds == 3600

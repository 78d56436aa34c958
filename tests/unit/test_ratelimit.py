"""The shared rate limit: its table, its bucket, and how the runner obeys it."""

from __future__ import annotations

import itertools
import time
from typing import Any

import fakeredis
import pytest

from cards.envelope import SUCCESS_MESSAGE
from cards.jobs import validate_job
from cards.rate_table import limit_for, parse_rate_limits
from harness.processes import wait_for
from tests.unit.pipelines import JobRunner
from tests.unit.test_runner import ScriptedGateway
from worker.attempts import SetDefaultCard
from worker.errors import StripeLockTimeout, StripeRateLimited
from worker.jobstate import JobStateStore
from worker.middleware.budget import Budget
from worker.middleware.retries import Retries
from worker.pipeline import RetryLater
from worker.ratelimit import Permit, RedisRateLimiter, limiter_key
from worker.retry_policy import RetryPolicy


@pytest.mark.parametrize(
    ("text", "table"),
    [
        ("", {}),
        ("cards=20", {("cards", None): 20.0}),
        (
            " cards.bulk=20, cards.live=80 ,cards.bulk@acct_1Xyz=2.5",
            {
                ("cards.bulk", None): 20.0,
                ("cards.live", None): 80.0,
                ("cards.bulk", "acct_1Xyz"): 2.5,
            },
        ),
    ],
)
def test_rate_table_parses(text: str, table: dict[Any, float]) -> None:
    assert parse_rate_limits(text) == table


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cards", "'cards' must be queue=rate or queue@acct_…=rate"),
        ("cards=fast", "'cards=fast' must be queue=rate"),
        ("cards@cus_1=5", "'cards@cus_1=5' must be queue=rate"),
        ("cards=0", "'cards=0' must have a rate above 0"),
    ],
)
def test_bad_rate_table_names_the_entry(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="CARDS_RATE_LIMITS entry") as caught:
        parse_rate_limits(text)
    assert message in str(caught.value)


def test_account_entry_overrides_the_queue_entry() -> None:
    table = parse_rate_limits("bulk=20,bulk@acct_1A=5")
    assert limit_for(table, "bulk", "acct_1A") == 5
    assert limit_for(table, "bulk", "acct_1B") == 20
    assert limit_for(table, "bulk", None) == 20
    assert limit_for(table, "live", None) is None


@pytest.fixture
def limiter() -> RedisRateLimiter:
    return RedisRateLimiter(
        fakeredis.FakeRedis(), burst_seconds=0.1, max_wait_seconds=0.5, recovery_seconds=60
    )


def test_tokens_are_reserved_one_interval_apart(limiter: RedisRateLimiter) -> None:
    """Each token is reserved 0.1 s after the previous one, on the limiter's clock: a wait
    is counted from the call, so the reservation is the call's time plus its wait."""
    calls = []
    for _ in range(6):
        before = time.monotonic()
        permit = limiter.acquire("k", 10)
        calls.append((before, time.monotonic(), permit))
    assert all(permit.go for _, _, permit in calls)
    assert calls[0][2].wait == 0
    for (b1, a1, p1), (b2, a2, p2) in itertools.pairwise(calls[1:]):
        # Where in each call Redis read its clock is unknown: allow both calls' durations.
        slack = 0.005 + (a1 - b1) + (a2 - b2)
        assert (b2 + p2.wait) - (b1 + p1.wait) == pytest.approx(0.1, abs=slack)


def test_a_wait_beyond_the_limit_is_deferred_without_taking_a_token(
    limiter: RedisRateLimiter,
) -> None:
    permits = [limiter.acquire("k", 10) for _ in range(8)]
    deferred = [p for p in permits if not p.go]
    assert deferred
    assert all(p.wait > 0.5 for p in deferred)
    # Deferred calls took nothing: the next one is told the same wait, not a longer one.
    again = limiter.acquire("k", 10)
    assert again.wait == pytest.approx(deferred[0].wait, abs=0.02)


def test_keys_are_independent(limiter: RedisRateLimiter) -> None:
    for _ in range(5):
        limiter.acquire(limiter_key("bulk", "acct_1A"), 10)
    assert limiter.acquire(limiter_key("bulk", "acct_1B"), 10).wait == 0


def test_429_halves_the_rate_down_to_a_floor(limiter: RedisRateLimiter) -> None:
    assert limiter.current_rate("k", 20) == 20
    assert limiter.throttled("k", 20) == pytest.approx(10)
    assert limiter.throttled("k", 20) == pytest.approx(5, rel=0.01)
    for _ in range(10):
        limiter.throttled("k", 20)
    assert limiter.current_rate("k", 20) == pytest.approx(1, rel=0.05)  # 5% of 20


def test_rate_recovers_to_full_after_a_throttle() -> None:
    quick = RedisRateLimiter(fakeredis.FakeRedis(), recovery_seconds=0.5)
    quick.throttled("k", 20)
    assert quick.current_rate("k", 20) < 20
    wait_for(lambda: quick.current_rate("k", 20) == 20, 5, "the rate to recover")


JOB = validate_job({"userId": "cus_A1", "default_source": "card_B2", "job_id": "job-1"})


class FixedLimiter(RedisRateLimiter):
    def __init__(self, go: bool, wait: float) -> None:
        super().__init__(fakeredis.FakeRedis())
        self.answer = (go, wait)
        self.throttles = 0

    def acquire(self, key: str, rate: float) -> Any:
        return Permit(*self.answer)

    def throttled(self, key: str, rate: float) -> float:
        self.throttles += 1
        return rate / 2


def make(
    limiter: RedisRateLimiter, script: list[Any], slept: list[float]
) -> tuple[JobRunner, ScriptedGateway]:
    gateway = ScriptedGateway(script)
    policy = RetryPolicy(
        max_attempts=5, backoff_seconds=1, backoff_max_seconds=10, window_seconds=600
    )
    runner = JobRunner(
        SetDefaultCard(gateway),
        Budget(limiter, parse_rate_limits("cards=10"), policy, sleep=slept.append),
        Retries(JobStateStore(fakeredis.FakeRedis()), policy),
    )
    return runner, gateway


def test_runner_sleeps_for_its_token_then_calls_stripe() -> None:
    slept: list[float] = []
    runner, gateway = make(FixedLimiter(True, 0.3), [], slept)
    outcome = runner.run(JOB, "job-1", first_delivery=True)
    assert isinstance(outcome, dict) and outcome["message"] == SUCCESS_MESSAGE
    assert slept == [0.3]
    assert len(gateway.writes) == 1


def test_runner_requeues_a_long_wait_without_calling_stripe() -> None:
    slept: list[float] = []
    runner, gateway = make(FixedLimiter(False, 2.4), [], slept)
    outcome = runner.run(JOB, "job-1", first_delivery=True)
    assert outcome == RetryLater(3, "rate_limiter")
    assert slept == []
    assert gateway.writes == []


def test_a_queue_without_a_limit_never_asks_the_limiter() -> None:
    runner, gateway = make(FixedLimiter(False, 9), [], [])
    outcome = runner.run(JOB, "job-1", first_delivery=True, queue="other-queue")
    assert isinstance(outcome, dict) and outcome["status"] is True
    assert len(gateway.writes) == 1


@pytest.mark.parametrize(
    ("error", "throttles"), [(StripeRateLimited("429"), 1), (StripeLockTimeout("429 lock"), 0)]
)
def test_only_a_rate_limit_429_slows_the_limiter(error: Exception, throttles: int) -> None:
    limiter = FixedLimiter(True, 0)
    runner, _ = make(limiter, [error], [])
    outcome = runner.run(JOB, "job-1", first_delivery=True)
    assert isinstance(outcome, RetryLater)
    assert limiter.throttles == throttles

"""Newest request wins, one writer per customer: the rules and the runner's use of them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest

from cards.jobs import validate_job
from tests.unit.pipelines import JobRunner
from tests.unit.test_runner import ScriptedGateway
from worker.attempts import SetDefaultCard
from worker.errors import (
    CardDeclined,
    StripeCallError,
    StripeConflict,
    StripeConnectionFailed,
    StripeRateLimited,
    StripeServerError,
)
from worker.jobstate import JobStateStore
from worker.middleware.customer_order import CustomerOrder, park_seconds
from worker.middleware.retries import Retries
from worker.ordering import (
    AppliedRequest,
    CustomerGuard,
    customer_key,
    is_stale,
    is_superseded,
)
from worker.pipeline import RetryLater
from worker.retry_policy import RetryPolicy

T0 = 1_700_000_000.0


@pytest.mark.parametrize(
    ("requested_at", "job_id", "newest", "superseded"),
    [
        (T0, "a", None, False),
        (T0 - 1, "a", AppliedRequest(T0, "b"), True),
        (T0 + 1, "a", AppliedRequest(T0, "b"), False),
        (T0, "a", AppliedRequest(T0, "b"), True),  # same time: ordered by job id
        (T0, "c", AppliedRequest(T0, "b"), False),
        (T0 - 5, "b", AppliedRequest(T0, "b"), False),  # the recorded job itself, redelivered
    ],
)
def test_superseded_table(
    requested_at: float, job_id: str, newest: AppliedRequest | None, superseded: bool
) -> None:
    assert is_superseded(requested_at, job_id, newest) is superseded


def test_stale_rule() -> None:
    assert not is_stale(T0 - 100, T0, max_age_seconds=100)
    assert is_stale(T0 - 101, T0, max_age_seconds=100)


def test_lock_is_exclusive_and_released_only_by_its_holder() -> None:
    guard = CustomerGuard(fakeredis.FakeRedis(), lock_seconds=5, max_job_age_seconds=3600)
    key = customer_key("cus_1", None)
    token, newest = guard.enter(key)
    assert token is not None
    assert newest is None
    assert guard.enter(key) == (None, None)
    guard.leave(key, "not-the-token")
    assert guard.enter(key) == (None, None)
    guard.leave(key, token)
    assert guard.enter(key)[0] is not None


def test_lock_expires_when_its_holder_dies() -> None:
    server = fakeredis.FakeRedis()
    guard = CustomerGuard(server, lock_seconds=5, max_job_age_seconds=3600)
    assert guard.enter("k")[0] is not None
    assert 0 < server.pttl("cards:customer-lock:k") <= 5000


def test_leaving_records_the_applied_request_for_the_next_holder() -> None:
    server = fakeredis.FakeRedis()
    guard = CustomerGuard(server, lock_seconds=5, max_job_age_seconds=3600)
    token, _ = guard.enter("k")
    assert token is not None
    guard.leave("k", token, AppliedRequest(T0, "job-9"))
    server.delete("cards:customer-lock:k")
    _, newest = guard.enter("k")
    assert newest == AppliedRequest(T0, "job-9")
    assert server.ttl("cards:customer-newest:k") == 3600 + 3600


def test_accounts_are_separate_customers() -> None:
    assert customer_key("cus_1", None) != customer_key("cus_1", "acct_1")


def job(when: float, job_id: str, source: str = "card_B2") -> Any:
    return validate_job(
        {
            "userId": "cus_A1",
            "default_source": source,
            "job_id": job_id,
            "requested_at": datetime.fromtimestamp(when, UTC).isoformat(),
        }
    )


def guarded(gateway: ScriptedGateway, server: Any) -> tuple[JobRunner, CustomerGuard]:
    """The set_default_card pipeline with its customer order and retries steps."""
    policy = RetryPolicy(
        max_attempts=5, backoff_seconds=1, backoff_max_seconds=10, window_seconds=600
    )
    guard = CustomerGuard(server, lock_seconds=5, max_job_age_seconds=3600)
    runner = JobRunner(
        SetDefaultCard(gateway),
        CustomerOrder(guard, policy, clock=lambda: T0),
        Retries(JobStateStore(server), policy, clock=lambda: T0),
    )
    return runner, guard


def test_older_request_after_a_newer_one_is_superseded_without_a_stripe_call() -> None:
    server = fakeredis.FakeRedis()
    gateway = ScriptedGateway([])
    runner, _ = guarded(gateway, server)
    newer = runner.run(job(T0 - 1, "new", "card_NEW"), "new", first_delivery=True)
    older = runner.run(job(T0 - 10, "old", "card_OLD"), "old", first_delivery=True)
    assert isinstance(newer, dict) and newer["status"] is True
    assert older == {
        "status": False,
        "message": "superseded by a newer request",
        "data": {
            "kind": "superseded",
            "code": None,
            "param": None,
            "request_id": None,
            "attempts": 0,
            "newer_job_id": "new",
        },
    }
    assert len(gateway.writes) == 1
    assert gateway.current_default == "card_NEW"


def test_busy_customer_sends_the_job_back_without_an_attempt() -> None:
    server = fakeredis.FakeRedis()
    gateway = ScriptedGateway([])
    runner, guard = guarded(gateway, server)
    holder, _ = guard.enter(customer_key("cus_A1", None))
    assert holder is not None
    outcome = runner.run(job(T0 - 1, "j1"), "j1", first_delivery=True)
    assert outcome == RetryLater(1, "customer_busy")
    assert gateway.writes == []
    guard.leave(customer_key("cus_A1", None), holder)
    assert isinstance(runner.run(job(T0 - 1, "j1"), "j1"), dict)


def test_lock_is_released_after_a_failed_attempt() -> None:
    server = fakeredis.FakeRedis()
    runner, guard = guarded(ScriptedGateway([StripeServerError("500")]), server)
    assert isinstance(runner.run(job(T0 - 1, "j1"), "j1", first_delivery=True), RetryLater)
    assert guard.enter(customer_key("cus_A1", None))[0] is not None


@pytest.mark.parametrize(
    ("error", "outcome", "parked"),
    [
        (None, {"status": True}, None),
        (StripeServerError("500"), RetryLater(4, "server_error"), None),  # answered
        (StripeRateLimited("429"), RetryLater(4, "rate_limit"), None),  # nothing applied
        (CardDeclined("402"), {"status": False}, None),
        (StripeConnectionFailed("timeout"), RetryLater(4, "connection"), 5 + 4),
        (StripeConflict("409: our key in flight"), RetryLater(2, "conflict"), 5 + 2),
        (StripeConnectionFailed("timeout"), {"status": False}, 5),  # gave up
    ],
)
def test_park_table(error: StripeCallError | None, outcome: Any, parked: float | None) -> None:
    assert park_seconds(error, outcome, lock_seconds=5) == parked


def test_a_parked_lock_is_taken_over_by_its_job_alone() -> None:
    server = fakeredis.FakeRedis()
    guard = CustomerGuard(server, lock_seconds=5, max_job_age_seconds=3600)
    token, _ = guard.enter("k", "old")
    assert token is not None
    guard.park("k", token, "old", 30)
    assert server.get("cards:customer-lock:k") == b"parked:old"
    assert 5000 < server.pttl("cards:customer-lock:k") <= 30_000
    assert guard.enter("k", "new") == (None, None)
    assert guard.enter("k") == (None, None)
    again, _ = guard.enter("k", "old")
    assert again is not None and again != token
    assert 0 < server.pttl("cards:customer-lock:k") <= 5000
    guard.park("k", token, "old", 30)  # a stale token parks nothing
    assert server.get("cards:customer-lock:k") == again.encode()
    guard.leave("k", again)
    assert guard.enter("k", "new")[0] is not None


def test_an_unanswered_write_keeps_the_customer_until_its_retry_has_an_answer() -> None:
    """The old request may still land at Stripe: a newer one must not be written first."""
    server = fakeredis.FakeRedis()
    gateway = ScriptedGateway([StripeConnectionFailed("timeout"), StripeConflict("409")])
    runner, guard = guarded(gateway, server)
    older, newer = job(T0 - 10, "old", "card_OLD"), job(T0 - 1, "new", "card_NEW")
    assert runner.run(older, "old", first_delivery=True) == RetryLater(1, "connection", "timeout")
    assert runner.run(newer, "new", first_delivery=True) == RetryLater(1, "customer_busy")
    assert isinstance(runner.run(older, "old"), RetryLater)  # 409: still in flight
    assert runner.run(newer, "new") == RetryLater(1, "customer_busy")
    answered = runner.run(older, "old")
    assert isinstance(answered, dict) and answered["status"] is True
    assert isinstance(runner.run(newer, "new"), dict)
    assert gateway.current_default == "card_NEW"
    assert guard.enter(customer_key("cus_A1", None))[1] == AppliedRequest(T0 - 1, "new")


def test_stale_request_is_refused() -> None:
    runner, _ = guarded(ScriptedGateway([]), fakeredis.FakeRedis())
    outcome = runner.run(job(T0 - 7200, "j1"), "j1", first_delivery=True)
    assert isinstance(outcome, dict)
    assert outcome["data"] is not None and outcome["data"]["kind"] == "stale"


def test_unstamped_job_counts_as_requested_when_run() -> None:
    server = fakeredis.FakeRedis()
    runner, guard = guarded(ScriptedGateway([]), server)
    raw = validate_job({"userId": "cus_A1", "default_source": "card_B2"})
    assert isinstance(runner.run(raw, "raw-1", first_delivery=True), dict)
    assert guard.enter(customer_key("cus_A1", None))[1] == AppliedRequest(T0, "raw-1")
    server.delete("cards:customer-lock:" + customer_key("cus_A1", None))
    older = runner.run(job(T0 - 1, "j2"), "j2", first_delivery=True)
    assert isinstance(older, dict) and older["message"] == "superseded by a newer request"

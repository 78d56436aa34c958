"""Decisions of one job attempt: retry, give up, reconcile, new key generation."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from cards.envelope import SUCCESS_MESSAGE, ErrorKind
from cards.jobs import SetDefaultCardJob, validate_job
from tests.unit.pipelines import JobRunner
from worker.attempts import SetDefaultCard, already_applied
from worker.errors import (
    Misconfigured,
    NoSuchCustomer,
    StripeCallError,
    StripeConnectionFailed,
    StripeRateLimited,
    StripeServerError,
)
from worker.idempotency import idempotency_key
from worker.jobstate import JobStateStore
from worker.middleware.retries import Retries
from worker.pipeline import RetryLater
from worker.retry_policy import RetryPolicy
from worker.stripe_api import StripeApi

JOB = validate_job({"userId": "cus_A1", "default_source": "card_B2", "job_id": "job-1"})


class ScriptedGateway(StripeApi):
    """Answers from a script; records every call."""

    def __init__(self, script: list[StripeCallError | None], current_default: str = "card_OLD"):
        super().__init__(None)
        self.script = script
        self.writes: list[str] = []
        self.reads = 0
        self.current_default = current_default

    def _customer(self) -> dict[str, Any]:
        return {"id": "cus_A1", "object": "customer", "default_source": self.current_default}

    def set_default(self, job: SetDefaultCardJob, idempotency_key: str) -> dict[str, Any]:
        self.writes.append(idempotency_key)
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        self.current_default = job.default_source
        return self._customer()

    def retrieve_customer(self, job: SetDefaultCardJob) -> dict[str, Any]:
        self.reads += 1
        return self._customer()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store() -> JobStateStore:
    return JobStateStore(fakeredis.FakeRedis())


POLICY = RetryPolicy(max_attempts=4, backoff_seconds=1, backoff_max_seconds=60, window_seconds=600)


def make(
    gateway: StripeApi,
    store: JobStateStore,
    clock: Clock | None = None,
    policy: RetryPolicy = POLICY,
) -> JobRunner:
    return JobRunner(SetDefaultCard(gateway), Retries(store, policy, clock or Clock()))


def test_success_returns_the_customer_and_forgets_state(store: JobStateStore) -> None:
    gateway = ScriptedGateway([])
    outcome = make(gateway, store).run(JOB, "job-1")
    assert outcome == {
        "status": True,
        "message": SUCCESS_MESSAGE,
        "data": {"id": "cus_A1", "object": "customer", "default_source": "card_B2"},
    }
    assert gateway.writes == [idempotency_key("job-1")]
    assert store._redis.keys("*") == []  # type: ignore[attr-defined]


def test_permanent_error_fails_at_once(store: JobStateStore) -> None:
    gateway = ScriptedGateway(
        [
            NoSuchCustomer(
                "no such customer",
                http_status=404,
                code="resource_missing",
                param="id",
                request_id="req_9",
            )
        ]
    )
    outcome = make(gateway, store).run(JOB, "job-1")
    assert outcome == {
        "status": False,
        "message": "no such customer",
        "data": {
            "kind": "no_such_customer",
            "code": "resource_missing",
            "param": "id",
            "request_id": "req_9",
            "attempts": 1,
        },
    }
    assert len(gateway.writes) == 1


def test_misconfiguration_is_logged_loudly(
    store: JobStateStore, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = ScriptedGateway(
        [Misconfigured("worker is misconfigured: Stripe says its API key was rejected (401)")]
    )
    outcome = make(gateway, store).run(JOB, "job-1")
    assert isinstance(outcome, dict) and outcome["data"]
    assert outcome["data"]["kind"] == ErrorKind.MISCONFIGURED
    assert any(r.levelname == "CRITICAL" for r in caplog.records)


def test_a_worker_without_a_key_reports_zero_attempts_and_says_why(
    store: JobStateStore, caplog: pytest.LogCaptureFixture
) -> None:
    outcome = make(StripeApi(None), store).run(JOB, "job-1", first_delivery=True)
    assert isinstance(outcome, dict) and outcome["data"]
    assert outcome["data"]["kind"] == ErrorKind.MISCONFIGURED
    assert outcome["data"]["attempts"] == 0
    critical = [r.getMessage() for r in caplog.records if r.levelname == "CRITICAL"]
    assert critical == ["job job-1: " + outcome["message"]]
    assert "STRIPE_API_KEY" in outcome["message"] and "refused" not in outcome["message"]


def test_a_retry_carries_the_last_errors_cause(store: JobStateStore) -> None:
    cause = "no answer from Stripe (connection failed or timed out: ConnectError: refused)"
    outcome = make(ScriptedGateway([StripeConnectionFailed(cause)]), store).run(JOB, "job-1")
    assert isinstance(outcome, RetryLater)
    assert (outcome.reason, outcome.cause) == ("connection", cause)


def test_transient_error_retries_with_the_same_key(store: JobStateStore) -> None:
    gateway = ScriptedGateway([StripeConnectionFailed("timeout"), StripeRateLimited("429")])
    runner = make(gateway, store)
    first = runner.run(JOB, "job-1")
    second = runner.run(JOB, "job-1")
    third = runner.run(JOB, "job-1")
    assert isinstance(first, RetryLater) and first.reason == "connection"
    assert isinstance(second, RetryLater) and second.reason == "rate_limit"
    assert isinstance(third, dict) and third["status"] is True
    assert gateway.writes == [idempotency_key("job-1")] * 3
    assert gateway.reads == 0


def test_saved_500_not_applied_reconciles_then_writes_with_next_generation(
    store: JobStateStore,
) -> None:
    gateway = ScriptedGateway([StripeServerError("500")])
    runner = make(gateway, store)
    assert isinstance(runner.run(JOB, "job-1"), RetryLater)
    final = runner.run(JOB, "job-1")
    assert isinstance(final, dict) and final["status"] is True
    assert gateway.reads == 1
    assert gateway.writes == [idempotency_key("job-1", 0), idempotency_key("job-1", 1)]


def test_saved_500_after_commit_reconciles_without_a_second_write(store: JobStateStore) -> None:
    class AppliedThen500(ScriptedGateway):
        def set_default(self, job: SetDefaultCardJob, idempotency_key: str) -> dict[str, Any]:
            self.writes.append(idempotency_key)
            self.current_default = job.default_source
            raise StripeServerError("500 after commit")

    gateway = AppliedThen500([])
    runner = make(gateway, store)
    assert isinstance(runner.run(JOB, "job-1"), RetryLater)
    final = runner.run(JOB, "job-1")
    assert isinstance(final, dict) and final["status"] is True
    assert final["data"] == {"id": "cus_A1", "object": "customer", "default_source": "card_B2"}
    assert gateway.writes == [idempotency_key("job-1", 0)]


def test_gives_up_after_max_attempts_with_a_clear_message(store: JobStateStore) -> None:
    gateway = ScriptedGateway(
        [StripeServerError("Stripe server error (500)", code=None, request_id="req_last")] * 10
    )
    runner = make(gateway, store)
    outcomes = [runner.run(JOB, "job-1") for _ in range(4)]
    assert all(isinstance(o, RetryLater) for o in outcomes[:3])
    final = outcomes[3]
    assert isinstance(final, dict)
    assert final["status"] is False
    assert final["message"].startswith("Stripe unavailable, gave up after 4 attempts")
    assert final["data"] == {
        "kind": "stripe_unavailable",
        "code": "server_error",
        "param": None,
        "request_id": "req_last",
        "attempts": 4,
    }
    assert store._redis.keys("*") == []  # type: ignore[attr-defined]


def test_gives_up_when_the_window_is_over(store: JobStateStore) -> None:
    clock = Clock()
    gateway = ScriptedGateway([StripeRateLimited("429")] * 10)
    runner = make(
        gateway,
        store,
        clock,
        RetryPolicy(
            max_attempts=100, backoff_seconds=1, backoff_max_seconds=60, window_seconds=100
        ),
    )
    assert isinstance(runner.run(JOB, "job-1"), RetryLater)
    clock.now += 150
    final = runner.run(JOB, "job-1")
    assert isinstance(final, dict) and final["status"] is False
    assert final["data"] is not None and final["data"]["attempts"] == 2


def test_state_store_outage_retries_without_calling_stripe() -> None:
    broken = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    broken.connection_pool.connection_kwargs["server"].connected = False
    gateway = ScriptedGateway([])
    outcome = make(gateway, JobStateStore(broken)).run(JOB, "job-1")
    assert isinstance(outcome, RetryLater) and outcome.reason == "state_store"
    assert gateway.writes == []


@pytest.mark.parametrize(
    ("source", "customer", "applied"),
    [
        ("card_B2", {"default_source": "card_B2"}, True),
        ("card_B2", {"default_source": "card_OLD"}, False),
        ("card_B2", {}, False),
        ("pm_1", {"invoice_settings": {"default_payment_method": "pm_1"}}, True),
        ("pm_1", {"invoice_settings": {"default_payment_method": None}}, False),
        ("pm_1", {"invoice_settings": None, "default_source": "pm_1"}, False),
    ],
)
def test_already_applied(source: str, customer: dict[str, Any], applied: bool) -> None:
    job = validate_job({"userId": "cus_A1", "default_source": source})
    assert already_applied(customer, job) is applied


class CountingRedis(fakeredis.FakeRedis):
    """Counts commands sent, so a test can prove the happy path sends none."""

    commands = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        type(self).commands += 1
        return super().execute_command(*args, **options)


def test_first_delivery_that_succeeds_never_touches_the_state_store() -> None:
    CountingRedis.commands = 0
    store = JobStateStore(CountingRedis())
    outcome = make(ScriptedGateway([]), store).run(JOB, "job-1", first_delivery=True)
    assert isinstance(outcome, dict) and outcome["status"] is True
    assert CountingRedis.commands == 0


def test_first_delivery_permanent_failure_reports_one_attempt(store: JobStateStore) -> None:
    gateway = ScriptedGateway([NoSuchCustomer("no such customer")])
    outcome = make(gateway, store).run(JOB, "job-1", first_delivery=True)
    assert isinstance(outcome, dict) and outcome["data"] is not None
    assert outcome["data"]["attempts"] == 1
    assert store._redis.keys("*") == []  # type: ignore[attr-defined]


def test_first_delivery_failure_records_state_for_the_retries(store: JobStateStore) -> None:
    gateway = ScriptedGateway([StripeServerError("500"), StripeRateLimited("429")])
    runner = make(gateway, store)
    assert isinstance(runner.run(JOB, "job-1", first_delivery=True), RetryLater)
    second = runner.run(JOB, "job-1")
    assert isinstance(second, RetryLater)
    final = runner.run(JOB, "job-1")
    assert isinstance(final, dict) and final["status"] is True
    assert gateway.writes == [
        idempotency_key("job-1", 0),
        idempotency_key("job-1", 1),
        idempotency_key("job-1", 1),
    ]


def test_redelivered_first_attempt_finds_its_way_to_the_recorded_generation(
    store: JobStateStore,
) -> None:
    """A worker died after moving the job to generation 1 but before acking the message."""
    store.begin_attempt("job-1", Clock()() - 5)
    store.advance_generation("job-1", 0)
    gateway = ScriptedGateway([StripeServerError("replayed 500 under generation 0")])
    runner = make(gateway, store)
    assert isinstance(runner.run(JOB, "job-1", first_delivery=True), RetryLater)
    final = runner.run(JOB, "job-1")
    assert isinstance(final, dict) and final["status"] is True
    assert gateway.writes == [idempotency_key("job-1", 0), idempotency_key("job-1", 1)]


def test_first_delivery_succeeds_even_while_the_state_store_is_down() -> None:
    broken = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    broken.connection_pool.connection_kwargs["server"].connected = False
    gateway = ScriptedGateway([])
    outcome = make(gateway, JobStateStore(broken)).run(JOB, "job-1", first_delivery=True)
    assert isinstance(outcome, dict) and outcome["status"] is True

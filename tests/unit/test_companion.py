"""The companion jobs: their contracts, and assign_card's reconcile-then-new-key decisions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import fakeredis
import pytest

from cards.companion_jobs import (
    ASSIGN_CARD_MESSAGE,
    LIST_CARDS_MESSAGE,
    AssignCardJob,
    assigned,
    listed,
    validate_assign_job,
    validate_list_job,
)
from cards.jobs import InvalidJob
from cards.kinds import ASSIGN_CARD
from tests.unit.pipelines import JobRunner
from worker.attempts import JOB_ID_METADATA_KEY, AssignCard, ListCards, tagged_card
from worker.errors import NoSuchCustomer, StripeCallError, StripeServerError
from worker.idempotency import idempotency_key
from worker.jobstate import JobStateStore
from worker.middleware.retries import Retries
from worker.pipeline import RetryLater
from worker.retry_policy import RetryPolicy
from worker.stripe_api import StripeApi, is_card

ASSIGN = {"userId": "cus_A1", "source": "tok_visa", "job_id": "job-1"}


def refusal(validate: Any, fields: Any) -> str:
    with pytest.raises(InvalidJob) as caught:
        validate(fields)
    return str(caught.value)


def test_assign_contract_accepts_tokens_and_sources() -> None:
    assert validate_assign_job(ASSIGN).source == "tok_visa"
    assert validate_assign_job({**ASSIGN, "source": "src_1AbC"}).source == "src_1AbC"
    job = validate_assign_job({**ASSIGN, "stripe_account": "acct_1", "job_id": None}).stamped()
    assert job.job_id and job.requested_at and job.stripe_account == "acct_1"
    assert job.to_task_kwargs()["source"] == "tok_visa"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({**ASSIGN, "source": "card_1"}, 'invalid job: source must start with "tok_" or "src_"'),
        ({**ASSIGN, "source": "tok_a-b"}, 'source must be "tok_" followed by letters and digits'),
        ({"userId": "cus_A1"}, "invalid job: source is required"),
        ({**ASSIGN, "sorce": "tok_visa"}, 'unknown field "sorce" (did you mean "source"?)'),
        ({**ASSIGN, "default_source": "card_1"}, 'unknown field "default_source"'),
        ({**ASSIGN, "userId": "usr_1"}, 'invalid job: userId must start with "cus_"'),
        ({**ASSIGN, "job_id": "-x"}, "job_id must be letters, digits and _ . : - only"),
        ({**ASSIGN, "stripe_account": "acc_1"}, 'stripe_account must start with "acct_"'),
        ([ASSIGN], "invalid job: job must be a JSON object of named fields"),
    ],
)
def test_assign_contract_refusals_name_the_field(fields: Any, message: str) -> None:
    assert message in refusal(validate_assign_job, fields)


def test_list_contract() -> None:
    assert validate_list_job({"userId": "cus_A1"}).userId == "cus_A1"
    assert 'unknown field "source"' in refusal(validate_list_job, {**ASSIGN})
    assert "userId is required" in refusal(validate_list_job, {})


def test_success_envelopes_have_the_seeds_shapes() -> None:
    card = {"id": "card_9", "object": "card", "last4": "4242"}
    assert assigned(card) == {
        "status": True,
        "message": ASSIGN_CARD_MESSAGE,
        "data": {"cardId": "card_9", "card": card},
    }
    assert listed([card]) == {"status": True, "message": LIST_CARDS_MESSAGE, "data": [card]}


@pytest.mark.parametrize(
    ("source", "kept"),
    [
        ({"id": "card_1", "object": "card"}, True),
        ({"id": "src_1", "object": "source", "type": "card"}, True),
        ({"id": "src_2", "object": "source", "type": "sepa_debit"}, False),
        ({"id": "ba_1", "object": "bank_account"}, False),
    ],
)
def test_only_cards_are_listed(source: dict[str, Any], kept: bool) -> None:
    assert is_card(source) is kept


def test_tagged_card_finds_the_jobs_card() -> None:
    cards: list[dict[str, Any]] = [
        {"id": "card_1", "metadata": {}},
        {"id": "card_2", "metadata": {JOB_ID_METADATA_KEY: "job-0"}},
        {"id": "card_3", "metadata": {JOB_ID_METADATA_KEY: "job-1"}},
        {"id": "card_4"},
    ]
    assert tagged_card(cards, "job-1") == cards[2]
    assert tagged_card(cards, "job-9") is None


class CardsGateway(StripeApi):
    """A customer's cards in memory; scripted failures for attach calls."""

    def __init__(self, script: list[StripeCallError | None], applied_before_failing: bool = False):
        super().__init__(None)
        self.script = script
        self.applied_before_failing = applied_before_failing
        self.cards: list[dict[str, Any]] = []
        self.keys: list[str] = []
        self.lists = 0

    def attach_source(
        self,
        customer: str,
        token: str,
        idempotency_key: str,
        account: str | None = None,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        self.keys.append(idempotency_key)
        outcome = self.script.pop(0) if self.script else None
        card = {"id": f"card_{len(self.cards)}", "object": "card", "metadata": dict(metadata or {})}
        if outcome is None or self.applied_before_failing:
            self.cards.append(card)
        if outcome is not None:
            raise outcome
        return card

    def list_cards(self, customer: str, account: str | None = None) -> list[dict[str, Any]]:
        self.lists += 1
        return list(self.cards)


POLICY = RetryPolicy(max_attempts=4, backoff_seconds=1, backoff_max_seconds=60, window_seconds=600)


def attempt_once(store: JobStateStore, gateway: CardsGateway, job: AssignCardJob) -> Any:
    """One delivery of an assign_card job through its kind and the retries step."""
    retries = Retries(store, POLICY, clock=lambda: 1_000_000.0)
    return JobRunner(AssignCard(gateway), retries).run(job, "job-1")


@pytest.fixture
def store() -> JobStateStore:
    return JobStateStore(fakeredis.FakeRedis())


def test_assign_tags_the_card_with_the_job_and_keys_the_write(store: JobStateStore) -> None:
    gateway = CardsGateway([])
    outcome = attempt_once(store, gateway, validate_assign_job(ASSIGN))
    assert outcome["data"]["cardId"] == "card_0"
    assert outcome["data"]["card"]["metadata"] == {JOB_ID_METADATA_KEY: "job-1"}
    assert gateway.keys == ["cards-assign:job-1"]
    assert gateway.keys[0] == idempotency_key("job-1", prefix=ASSIGN_CARD.key_prefix)
    assert gateway.lists == 0


@pytest.mark.parametrize("applied", [True, False], ids=["applied-then-500", "500-before"])
def test_assign_after_a_saved_500_reconciles_then_writes_once(
    store: JobStateStore, applied: bool
) -> None:
    gateway = CardsGateway([StripeServerError("500")], applied_before_failing=applied)
    job = validate_assign_job(ASSIGN)
    assert isinstance(attempt_once(store, gateway, job), RetryLater)
    final = attempt_once(store, gateway, job)
    assert final["status"] is True
    assert len(gateway.cards) == 1
    assert final["data"]["cardId"] == gateway.cards[0]["id"]
    assert gateway.lists == 1
    expected = (
        ["cards-assign:job-1"] if applied else ["cards-assign:job-1", "cards-assign:job-1:g1"]
    )
    assert gateway.keys == expected


def test_assign_permanent_failure_is_the_usual_envelope(store: JobStateStore) -> None:
    gateway = CardsGateway([NoSuchCustomer("no such customer", http_status=404)])
    outcome = attempt_once(store, gateway, validate_assign_job(ASSIGN))
    assert outcome["status"] is False
    assert outcome["data"]["kind"] == "no_such_customer"
    assert outcome["data"]["attempts"] == 1


def test_list_attempt_reads_the_cards(store: JobStateStore) -> None:
    gateway = CardsGateway([])
    gateway.cards = [{"id": "card_1", "object": "card"}]
    job = validate_list_job({"userId": "cus_A1"})
    outcome = JobRunner(ListCards(gateway), Retries(store, POLICY)).run(job, "job-2")
    assert outcome == listed(gateway.cards)

"""End to end: producer → Redis → celery worker → stripe SDK → emulator → envelope."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from cards.envelope import SUCCESS_MESSAGE
from cards.jobs import TASK_NAME
from cards.redaction import without_secrets
from harness.processes import CeleryWorker
from producers import enqueue_set_default_card, get_result
from stripe_emulator.process import EmulatorProcess
from tests.integration.conftest import (
    MAX_ATTEMPTS,
    applied_writes,
    customer_writes,
    requests_with_key,
    stripe_calls,
)
from worker.idempotency import idempotency_key

RESULT_TIMEOUT = 30


def run_job(app: Celery, user_id: str, source: str, **options: Any) -> tuple[str, dict[str, Any]]:
    job_id = enqueue_set_default_card(user_id, source, app=app, **options)
    return job_id, dict(get_result(job_id, timeout=RESULT_TIMEOUT, app=app))


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize("which", ["cards", "sources"])
def test_card_or_source_becomes_default_source(
    app: Celery, emulator: EmulatorProcess, customers: list[dict[str, Any]], which: str
) -> None:
    customer = customers[0]
    source = customer[which][-1]
    job_id, envelope = run_job(app, customer["id"], source)
    assert envelope["status"] is True
    assert envelope["message"] == SUCCESS_MESSAGE
    data = envelope["data"]
    assert data["id"] == customer["id"]
    assert data["object"] == "customer"
    assert data["default_source"] == source
    assert data["email"] == customer["email"]
    assert source in [s["id"] for s in data["sources"]["data"]]
    assert applied_writes(emulator, idempotency_key(job_id)) == 1


@pytest.mark.usefixtures("worker")
def test_payment_method_becomes_invoice_default(
    app: Celery, emulator: EmulatorProcess, customers: list[dict[str, Any]]
) -> None:
    customer = customers[0]
    pm = customer["payment_methods"][0]
    job_id, envelope = run_job(app, customer["id"], pm)
    assert envelope["status"] is True
    assert envelope["data"]["invoice_settings"]["default_payment_method"] == pm
    assert envelope["data"]["default_source"] == customer["default_source"]
    assert envelope["data"]["sources"]["object"] == "list"
    assert applied_writes(emulator, idempotency_key(job_id)) == 1


@pytest.mark.usefixtures("worker")
def test_data_is_the_customer_exactly_as_stripe_has_it(
    app: Celery, emulator: EmulatorProcess, customers: list[dict[str, Any]]
) -> None:
    customer = customers[1]
    _, envelope = run_job(app, customer["id"], customer["cards"][1])
    # The customer as Stripe returns it, but a source's client_secret is never stored.
    assert envelope["data"] == without_secrets(emulator.admin.get_customer(customer["id"]))


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize(
    ("case", "message", "kind"),
    [
        ("no_such_customer", "no such customer", "no_such_customer"),
        (
            "card_of_other_customer",
            "card is not attached to this customer; assign it first",
            "not_attached",
        ),
        ("unknown_card", "card is not attached to this customer; assign it first", "not_attached"),
        (
            "payment_method_of_other_customer",
            "payment method is not attached to this customer; attach it first",
            "not_attached",
        ),
    ],
)
def test_permanent_failures_end_at_once_with_an_actionable_message(
    app: Celery,
    emulator: EmulatorProcess,
    customers: list[dict[str, Any]],
    case: str,
    message: str,
    kind: str,
) -> None:
    me, other = customers[0], customers[1]
    user_id, source = {
        "no_such_customer": ("cus_NoSuchCustomer0", me["cards"][0]),
        "card_of_other_customer": (me["id"], other["cards"][0]),
        "unknown_card": (me["id"], "card_DoesNotExist0"),
        "payment_method_of_other_customer": (me["id"], other["payment_methods"][0]),
    }[case]
    job_id, envelope = run_job(app, user_id, source)
    assert envelope["status"] is False
    assert envelope["message"] == message
    error = envelope["data"]
    assert error["kind"] == kind
    assert error["attempts"] == 1
    assert error["request_id"].startswith("req_")
    assert error["code"] == "resource_missing"
    assert customer_writes(emulator, user_id) == 0
    assert requests_with_key(emulator, idempotency_key(job_id)) == 1


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize(
    "faults",
    [
        ["error_500"],
        ["error_500_after_commit"],
        ["timeout_after_commit"],
        ["conflict_409"],
        ["rate_limit"],
        ["connection_reset"],
        ["error_500", "timeout_after_commit", "rate_limit", "conflict_409"],
    ],
    ids=lambda faults: "+".join(faults),
)
def test_transient_faults_recover_with_exactly_one_applied_write(
    app: Celery,
    emulator: EmulatorProcess,
    customers: list[dict[str, Any]],
    faults: list[str],
) -> None:
    customer = customers[2]
    target = customer["cards"][1]
    emulator.admin.script_faults(customer["id"], faults)
    _, envelope = run_job(app, customer["id"], target)
    assert envelope["status"] is True, envelope["message"]
    assert envelope["data"]["default_source"] == target
    assert customer_writes(emulator, customer["id"]) == 1


@pytest.mark.usefixtures("worker")
def test_saved_500_moves_to_the_next_key_generation(
    app: Celery, emulator: EmulatorProcess, customers: list[dict[str, Any]]
) -> None:
    customer = customers[3]
    emulator.admin.script_faults(customer["id"], ["error_500"])
    job_id, envelope = run_job(app, customer["id"], customer["cards"][1])
    assert envelope["status"] is True
    assert applied_writes(emulator, idempotency_key(job_id, 0)) == 0
    assert applied_writes(emulator, idempotency_key(job_id, 1)) == 1


@pytest.mark.usefixtures("worker")
def test_saved_500_after_commit_reconciles_without_writing_again(
    app: Celery, emulator: EmulatorProcess, customers: list[dict[str, Any]]
) -> None:
    customer = customers[3]
    emulator.admin.script_faults(customer["id"], ["error_500_after_commit"])
    job_id, envelope = run_job(app, customer["id"], customer["cards"][1])
    assert envelope["status"] is True
    assert envelope["data"]["default_source"] == customer["cards"][1]
    assert applied_writes(emulator, idempotency_key(job_id, 0)) == 1
    assert requests_with_key(emulator, idempotency_key(job_id, 1)) == 0


@pytest.mark.usefixtures("worker")
def test_connect_account_is_sent_as_stripe_account(app: Celery, emulator: EmulatorProcess) -> None:
    [customer] = emulator.admin.seed(1, cards_per_customer=2, account="acct_1Connected")
    _, envelope = run_job(
        app, customer["id"], customer["cards"][1], stripe_account="acct_1Connected"
    )
    assert envelope["status"] is True
    _, elsewhere = run_job(app, customer["id"], customer["cards"][1])
    assert elsewhere["message"] == "no such customer"


@pytest.mark.usefixtures("worker")
def test_gives_up_after_the_configured_attempts(
    app: Celery, emulator: EmulatorProcess, customers: list[dict[str, Any]]
) -> None:
    customer = customers[0]
    emulator.admin.script_faults(customer["id"], ["rate_limit"] * 20)
    job_id = enqueue_set_default_card(customer["id"], customer["cards"][1], app=app)
    envelope = get_result(job_id, timeout=60, app=app)
    emulator.admin.clear_faults(customer["id"])
    assert envelope["status"] is False
    assert envelope["message"].startswith(
        f"Stripe unavailable, gave up after {MAX_ATTEMPTS} attempts"
    )
    assert envelope["data"] is not None
    assert envelope["data"]["kind"] == "stripe_unavailable"
    assert envelope["data"]["code"] == "rate_limit"
    assert customer_writes(emulator, customer["id"]) == 0


BAD_KWARGS: list[tuple[dict[str, Any], str]] = [
    ({}, "userId is required"),
    ({"userId": 42, "default_source": "card_1"}, "userId must be a string"),
    ({"userId": None, "default_source": "card_1"}, "userId must be a string"),
    ({"userId": "cus_1", "default_source": {"id": "card_1"}}, "default_source must be a string"),
    ({"userId": "cus_1", "defaultSource": "card_1"}, 'unknown field "defaultSource"'),
    ({"userId": "cus_1", "default_source": "card_1", "amount": 100}, 'unknown field "amount"'),
    (
        {"userId": "cus_" + "9" * 1_000_000, "default_source": "card_1"},
        "userId must be at most 255 characters",
    ),
    (
        {"userId": "cus_1\u202e", "default_source": "card_1"},
        'userId must be "cus_" followed by letters and digits only',
    ),
    ({"userId": "cus_1", "default_source": "tok_visa"}, "default_source must start with"),
    (
        {"userId": "cus_1", "default_source": "card_1", "callback_url": "javascript:alert(1)"},
        "callback_url must be",
    ),
    (
        {"userId": "cus_1", "default_source": "card_1", "requested_at": [1]},
        "requested_at must be an ISO 8601 date-time",
    ),
]


def test_raw_messages_with_bad_kwargs_fail_cleanly_without_stripe_calls(
    app: Celery, emulator: EmulatorProcess, worker: CeleryWorker
) -> None:
    before = stripe_calls(emulator)
    results = [app.send_task(TASK_NAME, kwargs=kwargs) for kwargs, _ in BAD_KWARGS]
    positional = app.send_task(TASK_NAME, args=["cus_1", "card_1"])
    for (_, expected), result in zip(BAD_KWARGS, results, strict=True):
        envelope = get_result(result.id, timeout=RESULT_TIMEOUT, app=app)
        assert envelope["status"] is False
        assert expected in envelope["message"]
        assert envelope["message"].startswith("invalid job: ")
        assert "Traceback" not in envelope["message"]
        assert len(envelope["message"]) < 500
        assert envelope["data"] is not None and envelope["data"]["kind"] == "invalid_job"
        assert envelope["data"]["attempts"] == 0
    envelope = get_result(positional.id, timeout=RESULT_TIMEOUT, app=app)
    assert envelope["message"].startswith("invalid job: send the fields as keyword arguments")
    assert stripe_calls(emulator) == before
    assert worker.alive

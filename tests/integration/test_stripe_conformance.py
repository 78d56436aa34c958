"""Every request the worker sends, as the official SDK encoded it, passes Stripe's spec.

The session worker runs each kind of job (set-default with ``card_``, ``src_`` and
``pm_``, on the platform and on a connected account; assign; list; the dry-run
check); the emulator captures each exchange as it went over the wire. Each request
is then checked against its operation in Stripe's OpenAPI description (form fields
decoded, unknown parameters refused, types and ``maxLength`` enforced), with the
pinned ``Stripe-Version``, the ``Stripe-Account`` header and the ``Idempotency-Key``;
each answer is checked against the operation's response schema.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from cards.jobs import CHECK_TASK_NAME
from cards.settings import STRIPE_API_VERSION
from producers import enqueue_set_default_card, get_result
from producers.companion import enqueue_assign_card, enqueue_list_cards
from stripe_emulator.process import EmulatorProcess
from tests.stripe_openapi import StripeSpec

RESULT_TIMEOUT = 30
ACCOUNT = "acct_conformance0001"


@pytest.fixture
def captured(emulator: EmulatorProcess) -> Iterator[list[dict[str, Any]]]:
    """The exchanges seen during the test (filled in when the test reads it)."""
    emulator.admin.configure(capture_requests=True)
    seen: list[dict[str, Any]] = []
    try:
        yield seen
    finally:
        emulator.admin.configure(capture_requests=False)


def _envelope(app: Celery, job_id: str) -> dict[str, Any]:
    envelope = dict(get_result(job_id, timeout=RESULT_TIMEOUT, app=app))
    assert envelope["status"] is True, envelope
    return envelope


@pytest.mark.usefixtures("worker")
def test_every_request_and_answer_of_every_job_fits_the_spec(
    app: Celery,
    emulator: EmulatorProcess,
    stripe_spec: StripeSpec,
    captured: list[dict[str, Any]],
) -> None:
    [plain, other] = emulator.admin.seed(2)
    [connected] = emulator.admin.seed(1, account=ACCOUNT)
    for source in (plain["cards"][1], plain["sources"][0], plain["payment_methods"][0]):
        _envelope(app, enqueue_set_default_card(plain["id"], source, app=app))
    _envelope(
        app,
        enqueue_set_default_card(
            connected["id"], connected["cards"][1], stripe_account=ACCOUNT, app=app
        ),
    )
    _envelope(app, enqueue_assign_card(other["id"], "tok_mastercard", app=app))
    _envelope(app, enqueue_list_cards(other["id"], app=app))
    for source in (plain["cards"][0], plain["payment_methods"][0]):
        check = app.send_task(
            CHECK_TASK_NAME,
            kwargs={"userId": plain["id"], "default_source": source},
            task_id=str(uuid.uuid4()),
        )
        assert check.get(timeout=RESULT_TIMEOUT)["status"] is True

    mine = {plain["id"], other["id"], connected["id"], *plain["payment_methods"]}
    captured.extend(x for x in emulator.admin.captured() if any(name in x["path"] for name in mine))
    problems = {}
    operations = set()
    for exchange in captured:
        template, _, _ = stripe_spec.operation(exchange["method"], exchange["path"])
        operations.add(f"{exchange['method']} {template}")
        found = stripe_spec.exchange_problems(exchange, STRIPE_API_VERSION)
        if found:
            problems[f"{exchange['method']} {exchange['path']}"] = found
    assert problems == {}
    assert operations == {
        "POST /v1/customers/{customer}",
        "GET /v1/customers/{customer}",
        "POST /v1/customers/{customer}/sources",
        "GET /v1/customers/{customer}/sources",
        "GET /v1/payment_methods/{payment_method}",
    }
    posts = [x for x in captured if x["method"] == "POST"]
    assert len(posts) == 5
    assert all(_header(x, "Idempotency-Key") for x in posts)
    assert all(_header(x, "Stripe-Version") == STRIPE_API_VERSION for x in captured)
    on_customer = [x for x in captured if x["path"].count("/") == 3 and "customers" in x["path"]]
    assert all("expand[0]=sources" in x["body"] + x["query"] for x in on_customer)
    on_account = [x for x in captured if connected["id"] in x["path"]]
    assert on_account and all(_header(x, "Stripe-Account") == ACCOUNT for x in on_account)


def _header(exchange: dict[str, Any], name: str) -> str | None:
    return next((v for k, v in exchange["headers"].items() if k.lower() == name.lower()), None)

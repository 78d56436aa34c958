"""Every request the worker sends, as the official SDK encoded it, passes Stripe's spec.

The session worker runs each kind of job (set-default with ``card_``, ``src_`` and
``pm_``, on the platform and on a connected account; assign; a list of two pages;
the dry-run check); the emulator captures each exchange as it went over the wire. Each request
is then checked against its operation in Stripe's OpenAPI description (form fields
decoded, unknown parameters refused, types and ``maxLength`` enforced), with the
pinned ``Stripe-Version``, the ``Stripe-Account`` header and the ``Idempotency-Key``;
each answer is checked against the operation's response schema.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import stripe
from celery import Celery

from cards.jobs import CHECK_TASK_NAME
from cards.settings import STRIPE_API_VERSION
from producers import enqueue_assign_card, enqueue_list_cards, enqueue_set_default_card, get_result
from stripe_emulator.process import EmulatorProcess
from tests.integration.conftest import API_KEY
from tests.stripe_openapi import StripeSpec
from worker.stripe_api import LIST_PAGE_SIZE

RESULT_TIMEOUT = 30
ACCOUNT = "acct_conformance0001"


@contextmanager
def capturing(emulator: EmulatorProcess) -> Iterator[list[dict[str, Any]]]:
    """The exchanges the emulator sees inside the block (the list is filled on exit)."""
    emulator.admin.configure(capture_requests=True)
    seen: list[dict[str, Any]] = []
    try:
        yield seen
        seen.extend(emulator.admin.captured())
    finally:
        emulator.admin.configure(capture_requests=False)


def _envelope(app: Celery, job_id: str) -> dict[str, Any]:
    envelope = dict(get_result(job_id, timeout=RESULT_TIMEOUT, app=app))
    assert envelope["status"] is True, envelope
    return envelope


@pytest.mark.usefixtures("worker")
def test_every_request_and_answer_of_every_job_fits_the_spec(
    app: Celery, emulator: EmulatorProcess, stripe_spec: StripeSpec
) -> None:
    [plain, other, many] = emulator.admin.seed(3)
    [connected] = emulator.admin.seed(1, account=ACCOUNT)
    sdk = stripe.StripeClient(API_KEY, base_addresses={"api": emulator.url})
    for _ in range(LIST_PAGE_SIZE):  # a listing of `many` takes a second page
        sdk.v1.customers.payment_sources.create(many["id"], {"source": "tok_visa"})
    with capturing(emulator) as seen:
        for source in (plain["cards"][1], plain["sources"][0], plain["payment_methods"][0]):
            _envelope(app, enqueue_set_default_card(plain["id"], source, app=app))
        _envelope(
            app,
            enqueue_set_default_card(
                connected["id"], connected["cards"][1], stripe_account=ACCOUNT, app=app
            ),
        )
        _envelope(app, enqueue_assign_card(other["id"], "tok_mastercard", app=app))
        _envelope(app, enqueue_list_cards(many["id"], app=app))
        for source in (plain["cards"][0], plain["payment_methods"][0]):
            check = app.send_task(
                CHECK_TASK_NAME,
                kwargs={"userId": plain["id"], "default_source": source},
                task_id=str(uuid.uuid4()),
            )
            assert check.get(timeout=RESULT_TIMEOUT)["status"] is True

    mine = {plain["id"], other["id"], many["id"], connected["id"], *plain["payment_methods"]}
    captured = [x for x in seen if any(name in x["path"] for name in mine)]
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
    pages = [x["query"] for x in captured if x["path"] == f"/v1/customers/{many['id']}/sources"]
    assert len(pages) == 2 and "starting_after=card_" in pages[1]
    on_account = [x for x in captured if connected["id"] in x["path"]]
    assert on_account and all(_header(x, "Stripe-Account") == ACCOUNT for x in on_account)


def _header(exchange: dict[str, Any], name: str) -> str | None:
    return next((v for k, v in exchange["headers"].items() if k.lower() == name.lower()), None)

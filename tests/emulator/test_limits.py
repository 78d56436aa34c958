"""Rate limits and per-customer lock detection."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import stripe

from stripe_emulator.admin_client import EmulatorAdmin

from .conftest import ClientFactory, wait_for
from .conftest import error_code as _code


def _update(client: stripe.StripeClient, customer: dict[str, Any], card: int = 1) -> Any:
    return client.v1.customers.update(customer["id"], {"default_source": customer["cards"][card]})


def test_burst_over_customer_update_limit_gets_429(
    client: stripe.StripeClient, admin: EmulatorAdmin
) -> None:
    customers = admin.seed(20)
    admin.configure(rate_limit_customer_update=5)
    outcomes: list[int] = []
    refusals: list[stripe.RateLimitError] = []
    for customer in customers:
        try:
            _update(client, customer)
            outcomes.append(200)
        except stripe.RateLimitError as exc:
            refusals.append(exc)
            outcomes.append(429)
    assert refusals
    for refusal in refusals:
        assert refusal.http_status == 429
        assert _code(refusal) == "rate_limit"
        assert "stripe-should-retry" not in (refusal.headers or {})
    # A 5/s bucket starts full: the first 5 pass, refills add at most a few more.
    assert outcomes[:5] == [200] * 5
    assert 5 <= outcomes.count(200) < 15
    # Reads are not limited by the customer-update limit.
    assert client.v1.customers.retrieve(customers[0]["id"]).id == customers[0]["id"]
    assert admin.ledger(events=False)["responses_by_status"]["429"] == outcomes.count(429)


def test_client_pacing_at_the_limit_is_never_refused(
    client: stripe.StripeClient, admin: EmulatorAdmin
) -> None:
    rate = 20.0
    customers = admin.seed(30)
    admin.configure(rate_limit_global=rate)
    interval = 1.0 / rate
    next_at = time.monotonic()
    for customer in customers:
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing is the behaviour under test, not synchronisation
        _update(client, customer)
        next_at += interval


def test_global_limit_is_per_account(client: stripe.StripeClient, admin: EmulatorAdmin) -> None:
    admin.configure(rate_limit_global=1)
    client.v1.customers.create({})
    with pytest.raises(stripe.RateLimitError):
        client.v1.customers.create({})
    client.v1.customers.create({}, {"stripe_account": "acct_1OwnBucket"})


def _concurrent_writes(
    client_factory: ClientFactory, admin: EmulatorAdmin, customer: dict[str, Any]
) -> tuple[Any, Any]:
    admin.configure(latency_ms=400)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(_update, client_factory(), customer, 1)
        wait_for(lambda: admin.health()["writes_in_flight"] >= 1, what="first write in flight")
        try:
            second: Any = _update(client_factory(), customer, 0)
        except stripe.StripeError as exc:
            second = exc
        return first.result(timeout=5), second


def test_concurrent_writes_to_one_customer_get_lock_timeout(
    client_factory: ClientFactory, admin: EmulatorAdmin, seeded: dict[str, Any]
) -> None:
    first, second = _concurrent_writes(client_factory, admin, seeded)
    assert first.default_source == seeded["cards"][1]
    assert isinstance(second, stripe.RateLimitError)
    assert second.http_status == 429
    assert _code(second) == "lock_timeout"
    assert (second.headers or {}).get("stripe-should-retry") == "true"
    ledger = admin.ledger()
    assert ledger["lock_timeouts"] == 1
    assert ledger["max_concurrent_writes_by_customer"][seeded["id"]] == 2
    assert ledger["writes_applied_by_customer"][seeded["id"]] == 1
    assert admin.get_customer(seeded["id"])["default_source"] == seeded["cards"][1]


def test_concurrency_is_measured_with_lock_timeout_off(
    client_factory: ClientFactory, admin: EmulatorAdmin, seeded: dict[str, Any]
) -> None:
    admin.configure(lock_timeout=False)
    first, second = _concurrent_writes(client_factory, admin, seeded)
    assert first.default_source == seeded["cards"][1]
    assert second.default_source == seeded["cards"][0]
    ledger = admin.ledger()
    assert ledger["lock_timeouts"] == 0
    assert ledger["max_concurrent_writes_by_customer"][seeded["id"]] == 2
    assert ledger["writes_applied_by_customer"][seeded["id"]] == 2
    events = [e for e in ledger["events"] if e["customer"] == seeded["id"]]
    assert len(events) == 2
    assert events[0]["t_end"] > events[1]["t_start"]  # they overlapped


def test_serial_writes_are_not_concurrent(
    client: stripe.StripeClient, admin: EmulatorAdmin, seeded: dict[str, Any]
) -> None:
    admin.configure(latency_ms=20)
    _update(client, seeded, 1)
    _update(client, seeded, 0)
    ledger = admin.ledger(events=False)
    assert ledger["max_concurrent_writes_by_customer"][seeded["id"]] == 1
    assert ledger["lock_timeouts"] == 0

"""Shared fixtures: one emulator subprocess per session, driven through the official SDK."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe

from stripe_emulator.admin_client import EmulatorAdmin
from stripe_emulator.process import EmulatorProcess, run_emulator

API_KEY = "sk_test_emulator_tests_0001"
WAIT_TIMEOUT = 5.0

ClientFactory = Callable[..., stripe.StripeClient]


def make_client(url: str, *, timeout: float = 2.0, api_key: str = API_KEY) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": url},
        max_network_retries=0,
        http_client=stripe.HTTPXClient(timeout=timeout, allow_sync_methods=True),
    )


def error_code(exc: stripe.StripeError) -> str | None:
    """The error ``code`` from the body (the SDK only sets ``.code`` on some classes)."""
    body: Any = exc.json_body or {}
    code = body.get("error", {}).get("code")
    return str(code) if code is not None else None


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = WAIT_TIMEOUT, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns something truthy (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


SDK_HTTPX_WARNING = "ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning"
"""stripe-python's HTTPXClient passes bodies as ``data=``; not ours to fix."""
HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.filterwarnings(SDK_HTTPX_WARNING))


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorProcess]:
    with run_emulator(seed=1234, extra_args=["--hang-seconds", "5"]) as emu:
        yield emu


@pytest.fixture
def admin(emulator: EmulatorProcess) -> Iterator[EmulatorAdmin]:
    """The admin client, with knobs, faults, ledger and rate buckets reset per test."""
    emulator.admin.reset(config=True)
    yield emulator.admin
    emulator.admin.reset(config=True)


@pytest.fixture
def client(emulator: EmulatorProcess, admin: EmulatorAdmin) -> stripe.StripeClient:
    return make_client(emulator.url)


@pytest.fixture
def client_factory(emulator: EmulatorProcess, admin: EmulatorAdmin) -> ClientFactory:
    def factory(**kwargs: Any) -> stripe.StripeClient:
        return make_client(emulator.url, **kwargs)

    return factory


@pytest.fixture
def seeded(admin: EmulatorAdmin) -> dict[str, Any]:
    """One fresh customer with two cards, a source and a payment method."""
    [customer] = admin.seed(1)
    return customer

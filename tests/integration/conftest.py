"""Integration fixtures: a private redis-server, the Stripe emulator, real workers.

Everything is a real process talking over loopback. The session's worker uses
short timeouts and backoffs so that fault-recovery tests finish in seconds;
tests that need other settings start their own worker on their own Redis
database.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from harness.processes import (
    BIN,
    CeleryWorker,
    RedisServer,
    client_app,
    free_port,
    run_redis,
    run_worker,
)
from stripe_emulator.process import EmulatorProcess, run_emulator
from worker.stripe_api import PROBE_CUSTOMER

API_KEY = "sk_test_integration_0123456789"
#: Stripe attempts per job in the session worker: enough for every scripted fault sequence.
MAX_ATTEMPTS = 6
#: Workers sign callbacks with both (a rotation in progress); receivers verify with either.
CALLBACK_SECRETS = (
    "whsec_" + base64.b64encode(b"integration-callback-secret-old-0123456789").decode(),
    "whsec_" + base64.b64encode(b"integration-callback-secret-new-0123456789").decode(),
)
#: The port the tests' callback receivers listen on: allowlisted, with its host, for
#: the session's workers and producers (an allowlist entry names a port).
RECEIVER_PORT = free_port()
RECEIVER_ALLOWED = f"127.0.0.1:{RECEIVER_PORT}"
#: Callback attempts per delivery in the session worker (1 s apart).
CALLBACK_MAX_ATTEMPTS = 4


def worker_env(redis_url: str, emulator_url: str, **overrides: str) -> dict[str, str]:
    return {
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_API_BASE": emulator_url,
        "CARDS_STRIPE_TIMEOUT_SECONDS": "1",
        "CARDS_RETRY_BACKOFF_SECONDS": "1",
        "CARDS_RETRY_BACKOFF_MAX_SECONDS": "2",
        "CARDS_RETRY_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "CARDS_CALLBACK_SECRETS": ",".join(CALLBACK_SECRETS),
        "CARDS_CALLBACK_ALLOWED_HOSTS": RECEIVER_ALLOWED,  # the tests' receiver
        "CARDS_CALLBACK_BACKOFF_SECONDS": "1",
        "CARDS_CALLBACK_BACKOFF_MAX_SECONDS": "1",
        "CARDS_CALLBACK_MAX_ATTEMPTS": str(CALLBACK_MAX_ATTEMPTS),
        **overrides,
    }


def applied_writes(emulator: EmulatorProcess, key: str) -> int:
    """Writes the emulator applied (not replayed) under one idempotency key."""
    return int(emulator.admin.ledger()["writes_applied_by_key"].get(key, 0))


def customer_writes(emulator: EmulatorProcess, customer_id: str) -> int:
    """Writes the emulator applied (not replayed) to one customer."""
    return int(emulator.admin.ledger()["writes_applied_by_customer"].get(customer_id, 0))


def stripe_calls(emulator: EmulatorProcess) -> int:
    """Requests the emulator saw, but for the breaker's probes (a worker probes at start,
    every few minutes, and after a job that lacked a connection; any of them may land
    while a refused job is in flight): those are not the job's."""
    ledger = emulator.admin.ledger(events=False)
    return int(ledger["requests_total"]) - int(
        ledger["requests_by_customer"].get(PROBE_CUSTOMER, 0)
    )


def requests_with_key(emulator: EmulatorProcess, key: str) -> int:
    """Every write request that carried this idempotency key, whatever its answer."""
    events = emulator.admin.ledger()["events"]
    return sum(1 for event in events if event["idempotency_key"] == key)


def cards_cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``cards`` command against a broker, as a user would."""
    return subprocess.run(
        [str(BIN / "cards"), *args],
        env={**os.environ, "CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with run_redis() as server:
        yield server


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorProcess]:
    with run_emulator(api_key=API_KEY) as process:
        yield process


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def worker(
    redis_server: RedisServer, emulator: EmulatorProcess, logs_dir: Path
) -> Iterator[CeleryWorker]:
    env = worker_env(redis_server.url(), emulator.url)
    with run_worker(env, logs_dir / "session-worker.log") as process:
        yield process


@pytest.fixture(scope="session")
def app(redis_server: RedisServer) -> Celery:
    return client_app(redis_server.url())


@pytest.fixture
def customers(emulator: EmulatorProcess) -> list[dict[str, Any]]:
    """Fresh customers, each with two cards, a source and a PaymentMethod attached."""
    return emulator.admin.seed(4, cards_per_customer=2)

"""Newest request wins and one writer per customer, with several real workers.

Full size: 1,000 customers x 5 changes each. Set CARDS_TEST_ORDERING_CUSTOMERS
to run another size. Also: an older write that reaches Stripe after its worker
gave up on it (a timeout) never lands over a newer one.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness.processes import RedisServer, client_app, run_worker, wait_for
from producers import enqueue_set_default_card, get_result
from stripe_emulator.process import EmulatorProcess
from tests.integration.conftest import worker_env

CUSTOMERS = int(os.environ.get("CARDS_TEST_ORDERING_CUSTOMERS", "1000"))
CHANGES = 5


@pytest.fixture
def slow_stripe(emulator: EmulatorProcess) -> Iterator[None]:
    """A little latency, so that writes to one customer would overlap if they could."""
    emulator.admin.configure(latency_ms=2, jitter_ms=4)
    try:
        yield
    finally:
        emulator.admin.configure(latency_ms=0, jitter_ms=0)


@pytest.mark.usefixtures("slow_stripe")
def test_every_customer_ends_on_its_newest_request_with_one_writer_at_a_time(
    redis_server: RedisServer, emulator: EmulatorProcess, logs_dir: Path
) -> None:
    db = 7
    env = worker_env(redis_server.url(db), emulator.url)
    app = client_app(redis_server.url(db))
    customers = emulator.admin.seed(CUSTOMERS, cards_per_customer=CHANGES)
    base = datetime.now(UTC) - timedelta(minutes=1)
    changes = [
        (customer, i, base + timedelta(milliseconds=i))
        for customer in customers
        for i in range(CHANGES)
    ]
    random.Random(7).shuffle(changes)

    with (
        run_worker(env, logs_dir / "order-a.log", name="order-a"),
        run_worker(env, logs_dir / "order-b.log", name="order-b"),
    ):
        jobs = [
            enqueue_set_default_card(
                customer["id"], customer["cards"][i], requested_at=when, app=app
            )
            for customer, i, when in changes
        ]
        envelopes = [get_result(job, timeout=300, app=app) for job in jobs]

    outcomes = Counter(
        "ok" if e["status"] else (e["data"] or {}).get("kind", "?") for e in envelopes
    )
    assert set(outcomes) <= {"ok", "superseded"}, outcomes
    assert outcomes["superseded"] > 0

    ledger = emulator.admin.ledger(events=False)
    for customer in customers:
        assert ledger["max_concurrent_writes_by_customer"].get(customer["id"], 0) <= 1
        assert 1 <= ledger["writes_applied_by_customer"][customer["id"]] <= CHANGES
        final = emulator.admin.get_customer(customer["id"])
        assert final["default_source"] == customer["cards"][CHANGES - 1], customer["id"]


@pytest.fixture
def late_by_two_seconds(emulator: EmulatorProcess) -> Iterator[None]:
    emulator.admin.configure(late_arrival_seconds=2)
    try:
        yield
    finally:
        emulator.admin.configure(late_arrival_seconds=1)


@pytest.mark.usefixtures("late_by_two_seconds")
def test_an_older_write_that_reaches_stripe_after_its_timeout_never_lands_over_a_newer_one(
    redis_server: RedisServer, emulator: EmulatorProcess, logs_dir: Path
) -> None:
    """The worker gives up on the older request after its 1 s timeout; the request
    reaches Stripe 2 s later. Meanwhile the newer request must not be written."""
    db = 8
    app = client_app(redis_server.url(db))
    (customer,) = emulator.admin.seed(1, cards_per_customer=3)
    cid, old_card, new_card = customer["id"], customer["cards"][1], customer["cards"][2]
    emulator.admin.script_faults(cid, ["late_arrival"])
    base = datetime.now(UTC) - timedelta(seconds=10)

    env = worker_env(redis_server.url(db), emulator.url)
    with run_worker(env, logs_dir / "order-late.log", name="order-late"):
        older = enqueue_set_default_card(cid, old_card, requested_at=base, app=app)
        wait_for(
            lambda: emulator.admin.ledger(events=False)["requests_by_customer"].get(cid, 0) >= 1,
            timeout=30,
            what="the older request to be on its way to Stripe",
        )
        newer = enqueue_set_default_card(
            cid, new_card, requested_at=base + timedelta(seconds=1), app=app
        )
        envelopes = [get_result(job, timeout=60, app=app) for job in (older, newer)]

    def late_one_ran() -> list[dict[str, object]]:
        events = emulator.admin.ledger()["events"]
        return [e for e in events if e["customer"] == cid and e["fault"] == "late_arrival"]

    wait_for(lambda: bool(late_one_ran()), timeout=30, what="the late request to reach Stripe")
    assert emulator.admin.get_customer(cid)["default_source"] == new_card
    (late,) = late_one_ran()
    assert late["replayed"] is True  # the older job's retry ran first, under the same key
    assert [e["status"] for e in envelopes] == [True, True]
    assert emulator.admin.ledger(events=False)["writes_applied_by_customer"][cid] == 2

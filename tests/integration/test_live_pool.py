"""The plain ``celery -A worker worker`` runs live jobs many at a time, and keeps its promises.

Started with no pool or concurrency flag (as the README and compose do), the
worker runs jobs on Celery's threads pool, ``CARDS_WORKER_CONCURRENCY`` of them
at once in each process (here one, ``CARDS_WORKER_PROCESSES=1``; several:
test_worker_processes.py). A warm shutdown (SIGTERM, what a deploy sends) with
dozens of Stripe calls in flight lets every one of them finish and store its
envelope, puts back what had not started, and applies no write twice.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.migrations import rss_bytes
from harness.processes import (
    BULK_POOL,
    RedisServer,
    child_pids,
    client_app,
    start_worker,
    wait_for,
)
from producers import enqueue_set_default_card, get_result
from stripe_emulator.process import EmulatorProcess, run_emulator
from tests.integration.conftest import API_KEY, applied_writes, worker_env
from worker.idempotency import idempotency_key

#: Long enough that every job of the first wave is still inside its Stripe call at SIGTERM.
SLOW_STRIPE_MS = 2000
#: Well above the slow calls (the tests' usual 1 s would time every one of them out).
STRIPE_TIMEOUT_SECONDS = 10
CONCURRENCY = 12
#: More jobs than the worker runs at once: the rest wait in the queue at SIGTERM.
JOBS = 2 * CONCURRENCY
#: A threads worker after its jobs: about 95 MB measured (bench/live.py); one prefork
#: pool process alone is about 85 MB.
MAX_WORKER_RSS_BYTES = 160 * 2**20


@pytest.fixture(scope="module")
def slow_emulator() -> Iterator[EmulatorProcess]:
    with run_emulator(api_key=API_KEY, latency_ms=SLOW_STRIPE_MS) as emu:
        yield emu


def test_plain_command_runs_the_threads_pool_at_the_configured_size(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    logs_dir: Path,
) -> None:
    db = 8
    customers: list[dict[str, Any]] = emulator.admin.seed(80, cards_per_customer=2)
    env = worker_env(
        redis_server.url(db),
        emulator.url,
        CARDS_WORKER_CONCURRENCY="40",
        CARDS_WORKER_PROCESSES="1",  # one process; tests/integration/test_worker_processes.py: more
    )
    app = client_app(redis_server.url(db))
    worker = start_worker(env, logs_dir / "plain.log", name="plain")
    try:
        banner = re.search(r"concurrency:\s+(\d+) \((\w+)\)", worker.log)
        assert banner is not None, worker.log[:2000]
        assert banner.groups() == ("40", "thread")
        jobs = [enqueue_set_default_card(c["id"], c["cards"][0], app=app) for c in customers]
        assert all(get_result(job, timeout=60, app=app)["status"] for job in jobs)
        # One process, however many jobs ran at once: no pool children to fork, watch
        # or replace, and one process's memory (a prefork pool holds one per slot).
        assert child_pids(worker.process.pid) == []
        assert rss_bytes(worker.process.pid) < MAX_WORKER_RSS_BYTES
    finally:
        worker.stop()


def test_sigterm_lets_every_call_in_flight_finish_and_requeues_the_rest(
    redis_server: RedisServer, slow_emulator: EmulatorProcess, logs_dir: Path
) -> None:
    db = 9
    env = worker_env(
        redis_server.url(db),
        slow_emulator.url,
        CARDS_WORKER_CONCURRENCY=str(CONCURRENCY),
        CARDS_WORKER_PROCESSES="1",
        CARDS_STRIPE_TIMEOUT_SECONDS=str(STRIPE_TIMEOUT_SECONDS),
    )
    app = client_app(redis_server.url(db))
    customers: list[dict[str, Any]] = slow_emulator.admin.seed(JOBS, cards_per_customer=2)
    doomed = start_worker(env, logs_dir / "sigterm.log", name="sigterm")
    jobs = [enqueue_set_default_card(c["id"], c["cards"][1], app=app) for c in customers]
    wait_for(
        lambda: slow_emulator.admin.health()["writes_in_flight"] >= CONCURRENCY,
        30,
        f"{CONCURRENCY} Stripe calls in flight at once",
    )
    doomed.process.send_signal(signal.SIGTERM)
    assert doomed.process.wait(60) == 0, doomed.log[-3000:]
    finished_by_doomed = sum(applied_writes(slow_emulator, idempotency_key(job)) for job in jobs)
    # Every call in flight at SIGTERM was let finish (none cut off, none left hanging).
    assert slow_emulator.admin.health()["writes_in_flight"] == 0
    assert CONCURRENCY <= finished_by_doomed < JOBS

    successor = start_worker(env, logs_dir / "sigterm-successor.log", name="successor")
    try:
        envelopes = [get_result(job, timeout=60, app=app) for job in jobs]
    finally:
        successor.stop()
    assert [e["status"] for e in envelopes] == [True] * JOBS
    for job, customer, envelope in zip(jobs, customers, envelopes, strict=True):
        assert envelope["data"] is not None
        assert envelope["data"]["default_source"] == customer["cards"][1]
        assert applied_writes(slow_emulator, idempotency_key(job)) == 1


def test_prefork_without_a_size_runs_one_process_per_core(
    redis_server: RedisServer, emulator: EmulatorProcess, logs_dir: Path
) -> None:
    """``-P prefork`` with no ``-c`` (a bulk worker started by hand) does not fork
    CARDS_WORKER_CONCURRENCY processes."""
    env = worker_env(redis_server.url(10), emulator.url)
    worker = start_worker(
        env, logs_dir / "unsized.log", name="unsized", extra_args=("-Q", "cards.bulk", *BULK_POOL)
    )
    try:
        banner = re.search(r"concurrency:\s+(\d+) \((\w+)\)", worker.log)
        assert banner is not None, worker.log[:2000]
        assert banner.groups() == (str(os.cpu_count()), "prefork")
    finally:
        worker.stop()

"""The plain command runs one threads-pool worker process per core, and keeps its promises.

``celery -A worker worker`` (no flags) starts ``CARDS_WORKER_PROCESSES`` - 1 sibling
worker processes next to its own (worker/siblings.py). Proven here with real
``celery worker`` processes, real Redis and the Stripe emulator: both processes
consume under distinct node names; SIGTERM to the main pid alone lets every call in
flight in both finish and the main process exits 0 only after its siblings;
SIGKILL of the main pid alone takes the siblings down and a successor finishes
every job once; the one ``/metrics`` counts both processes' jobs; a sibling that
dies fails ``/readyz`` until the main process has restarted it, and one shut down
on purpose (remote control) is not restarted.
"""

from __future__ import annotations

import os
import re
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from harness.processes import (
    CeleryWorker,
    RedisServer,
    child_pids,
    client_app,
    free_port,
    gone,
    start_worker,
    wait_for,
)
from producers import enqueue_set_default_card, get_result
from stripe_emulator.process import EmulatorProcess, run_emulator
from tests.integration.conftest import API_KEY, applied_writes, worker_env
from worker.idempotency import idempotency_key

#: Every job of a wave is still inside its Stripe call when the test signals.
SLOW_STRIPE_MS = 1500
STRIPE_TIMEOUT_SECONDS = 10
PROCESSES = 2
#: Threads per process.
CONCURRENCY = 6
#: More jobs than both processes run at once: the rest wait in the queue.
JOBS = 3 * PROCESSES * CONCURRENCY


@pytest.fixture(scope="module")
def slow_emulator() -> Iterator[EmulatorProcess]:
    with run_emulator(api_key=API_KEY, latency_ms=SLOW_STRIPE_MS) as emu:
        yield emu


def env_for(redis_url: str, emulator: EmulatorProcess, **overrides: str) -> dict[str, str]:
    return worker_env(
        redis_url,
        emulator.url,
        CARDS_WORKER_PROCESSES=str(PROCESSES),
        CARDS_WORKER_CONCURRENCY=str(CONCURRENCY),
        CARDS_STRIPE_TIMEOUT_SECONDS=str(STRIPE_TIMEOUT_SECONDS),
        CARDS_VISIBILITY_TIMEOUT_SECONDS="5",
        CARDS_UNACKED_RESTORE_INTERVAL_SECONDS="1",
        **overrides,
    )


def siblings_of(worker: CeleryWorker) -> list[int]:
    return child_pids(worker.process.pid)


def enqueue(app: Celery, customers: list[dict[str, Any]], card: int) -> list[str]:
    return [enqueue_set_default_card(c["id"], c["cards"][card], app=app) for c in customers]


def finished(app: Celery, jobs: list[str]) -> int:
    return sum(1 for job in jobs if app.AsyncResult(job).state == "SUCCESS")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_both_processes_consume_under_distinct_node_names_and_one_metrics_counts_both(
    redis_server: RedisServer, slow_emulator: EmulatorProcess, logs_dir: Path, tmp_path: Path
) -> None:
    db = 11
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = env_for(
        redis_server.url(db),
        slow_emulator,
        CARDS_METRICS_PORT=str(port),
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    app = client_app(redis_server.url(db))
    customers: list[dict[str, Any]] = slow_emulator.admin.seed(JOBS, cards_per_customer=2)
    worker = start_worker(env, logs_dir / "processes.log", name="procs")
    try:
        siblings = siblings_of(worker)
        assert len(siblings) == PROCESSES - 1, worker.log[-3000:]
        jobs = enqueue(app, customers, 0)
        assert all(get_result(job, timeout=60, app=app)["status"] for job in jobs)

        stats = app.control.inspect(timeout=5).stats() or {}
        by_node = {node: sum(s.get("total", {}).values()) for node, s in stats.items()}
        host = next(iter(stats)).split("@", 1)[1]
        assert set(by_node) == {f"procs@{host}", f"procs-2@{host}"}
        assert all(count > 0 for count in by_node.values()), by_node
        assert sum(by_node.values()) == JOBS

        # One /metrics, served by the main process, sums what both processes counted.
        status, body = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        outcomes = [
            float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith("cards_job_outcomes_total{") and 'outcome="ok"' in line
        ]
        assert sum(outcomes) == JOBS, body[:2000]
        counted_by = {
            name.rsplit("_", 1)[1].removesuffix(".db") for name in os.listdir(metrics_dir)
        }
        assert {str(worker.process.pid), str(siblings[0])} <= counted_by
        assert get(f"http://127.0.0.1:{port}/readyz") == (200, "ok\n")
    finally:
        worker.stop()


@dataclass
class Busy:
    """A worker whose processes all have every thread inside a Stripe call."""

    env: dict[str, str]
    app: Celery
    worker: CeleryWorker
    siblings: list[int]
    jobs: list[str]
    customers: list[dict[str, Any]]


def busy_worker(
    redis_server: RedisServer, emulator: EmulatorProcess, log: Path, db: int, name: str
) -> Busy:
    env = env_for(redis_server.url(db), emulator)
    app = client_app(redis_server.url(db))
    customers: list[dict[str, Any]] = emulator.admin.seed(JOBS, cards_per_customer=2)
    worker = start_worker(env, log, name=name)
    siblings = siblings_of(worker)
    jobs = enqueue(app, customers, 1)
    wait_for(
        lambda: emulator.admin.health()["writes_in_flight"] >= PROCESSES * CONCURRENCY,
        30,
        "both processes' threads inside a Stripe call",
    )
    return Busy(env, app, worker, siblings, jobs, customers)


def a_successor_finishes_each_job_once(
    busy: Busy, emulator: EmulatorProcess, log: Path, name: str
) -> None:
    successor = start_worker(busy.env, log, name=name)
    try:
        envelopes = [get_result(job, timeout=90, app=busy.app) for job in busy.jobs]
    finally:
        successor.stop()
    assert [e["status"] for e in envelopes] == [True] * JOBS
    for job, customer, envelope in zip(busy.jobs, busy.customers, envelopes, strict=True):
        assert envelope["data"] is not None
        assert envelope["data"]["default_source"] == customer["cards"][1]
        # A call cut off reached Stripe with the same idempotency key as its retry.
        assert applied_writes(emulator, idempotency_key(job)) == 1


def test_sigterm_to_the_main_pid_alone_drains_every_process_and_exits_zero(
    redis_server: RedisServer, slow_emulator: EmulatorProcess, logs_dir: Path
) -> None:
    busy = busy_worker(redis_server, slow_emulator, logs_dir / "processes-term.log", 12, "drain")
    doomed = busy.worker
    doomed.process.send_signal(signal.SIGTERM)  # the main process only, as Kubernetes does
    assert doomed.process.wait(60) == 0, doomed.log[-3000:]
    # The main process returned only after its siblings had exited.
    assert all(gone(pid) for pid in busy.siblings)
    assert slow_emulator.admin.health()["writes_in_flight"] == 0
    applied = sum(applied_writes(slow_emulator, idempotency_key(job)) for job in busy.jobs)
    # Every call in flight in either process finished and stored its envelope.
    assert PROCESSES * CONCURRENCY <= applied < JOBS
    assert finished(busy.app, busy.jobs) == applied
    assert "worker processes: drain@" in doomed.log
    a_successor_finishes_each_job_once(
        busy, slow_emulator, logs_dir / "processes-term-next.log", "next"
    )


def test_sigkill_of_the_main_pid_takes_the_siblings_down_and_loses_nothing(
    redis_server: RedisServer, slow_emulator: EmulatorProcess, logs_dir: Path
) -> None:
    busy = busy_worker(redis_server, slow_emulator, logs_dir / "processes-kill.log", 13, "crash")
    busy.worker.process.send_signal(signal.SIGKILL)  # the main pid alone, not its group
    busy.worker.process.wait(10)
    wait_for(lambda: all(gone(pid) for pid in busy.siblings), 10, "the siblings to die with it")
    a_successor_finishes_each_job_once(
        busy, slow_emulator, logs_dir / "processes-kill-next.log", "after"
    )


def test_a_dead_sibling_fails_readiness_until_it_is_restarted_and_a_stopped_one_is_not(
    redis_server: RedisServer, slow_emulator: EmulatorProcess, logs_dir: Path
) -> None:
    db = 14
    port = free_port()
    env = env_for(redis_server.url(db), slow_emulator, CARDS_METRICS_PORT=str(port))
    worker = start_worker(env, logs_dir / "processes-restart.log", name="heal")
    try:
        wait_for(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 30, "ready")
        (first,) = siblings_of(worker)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 503, 10, "not ready")
        body = get(f"http://127.0.0.1:{port}/readyz")[1]
        assert "heal-2@" in body and "not running" in body
        assert get(f"http://127.0.0.1:{port}/livez")[0] == 200  # restarting, not stuck
        wait_for(lambda: siblings_of(worker) not in ([], [first]), 20, "a new sibling")
        wait_for(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 30, "ready again")
        restarted = r"worker process heal-2@\S+: killed by SIGKILL; restarting in 1 s"
        assert re.search(restarted, worker.log)
        sibling_ready = re.compile(r"heal-2@\S+ ready\.")
        wait_for(lambda: len(sibling_ready.findall(worker.log)) == 2, 30, "the new one ready")

        # Shut down on purpose (a remote shutdown to its node alone): not restarted.
        (second,) = siblings_of(worker)
        app = client_app(redis_server.url(db))
        app.control.shutdown(destination=[sibling_ready.findall(worker.log)[0][:-7]])
        wait_for(lambda: gone(second), 30, "the sibling to shut down")
        wait_for(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 503, 10, "not ready")
        body = get(f"http://127.0.0.1:{port}/readyz")[1]
        assert "(exited with code 0); not restarted" in body
        assert siblings_of(worker) == []
    finally:
        worker.stop()
    assert worker.process.returncode == 0

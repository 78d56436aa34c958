"""The Stripe breaker: a worker that cannot work with Stripe leaves jobs queued, says why once,
shows it in /metrics, and resumes by itself; jobs it failed meanwhile are dead letters.

Each test has its own Redis database, worker and emulator: they change what the emulator
answers, or where it listens.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from cards.jobs import TASK_NAME
from harness.processes import (
    RedisServer,
    client_app,
    free_port,
    nodes_of,
    start_worker,
    wait_for,
)
from producers import enqueue_set_default_card, get_result
from producers.client import ResultNotReady
from stripe_emulator.process import EmulatorProcess, run_emulator
from tests.integration.conftest import API_KEY, cards_cli, worker_env

BREAKER_DB = 14


def gauge(metrics_port: int) -> dict[str, float]:
    """``cards_stripe_breaker_open`` by cause, from the worker's /metrics."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", trust_env=False).text
    found = re.findall(r'^cards_stripe_breaker_open\{cause="(.*)"\} (\S+)$', text, re.M)
    return {cause: float(value) for cause, value in found}


def test_an_unreachable_base_url_leaves_jobs_queued_until_a_probe_succeeds(
    redis_server: RedisServer, logs_dir: Path
) -> None:
    url = redis_server.url(BREAKER_DB)
    redis.Redis.from_url(url).flushdb()
    stripe_port, metrics_port = free_port(), free_port()
    base = f"http://127.0.0.1:{stripe_port}"  # nothing listens there yet
    env = worker_env(
        url,
        base,
        CARDS_BREAKER_PROBE_SECONDS="0.5",
        CARDS_METRICS_PORT=str(metrics_port),
    )
    log = logs_dir / "breaker-unreachable.log"
    worker = start_worker(env, log, name="breaker")
    app = client_app(url)
    try:
        wait_for(lambda: "stripe breaker open" in log.read_text(), 30, "the breaker to open")

        def critical_lines() -> list[str]:
            return [line for line in log.read_text().splitlines() if "CRITICAL" in line]

        # Once per worker process: each has its breaker (docs/worker.md, worker/siblings.py).
        wait_for(
            lambda: len(critical_lines()) == len(nodes_of(log.read_text(), "breaker")),
            30,
            "every process's breaker to open",
        )
        text = log.read_text()
        assert f"stripe: calling {base}" in text
        critical = critical_lines()
        assert len(critical) == len(nodes_of(text, "breaker"))
        assert "no answer from Stripe" in critical[0] and "ConnectError" in critical[0]
        assert f"STRIPE_API_BASE is {base}" in critical[0]
        assert API_KEY not in text
        cause = next(iter(gauge(metrics_port)))
        assert gauge(metrics_port) == {cause: 1.0} and "no answer from Stripe" in cause

        job_id = enqueue_set_default_card("cus_BreakerQueued1", "card_1BreakerQueued", app=app)
        with pytest.raises(ResultNotReady, match="state PENDING"):
            get_result(job_id, timeout=2, app=app)
        assert redis.Redis.from_url(url).llen("cards") == 1  # left queued, never taken

        with run_emulator(api_key=API_KEY, port=stripe_port) as emulator:
            customer = emulator.admin.seed(1, cards_per_customer=2)[0]
            second = enqueue_set_default_card(customer["id"], customer["cards"][1], app=app)
            assert get_result(second, timeout=30, app=app)["status"] is True
            # The job queued while the breaker was open ran too (no such customer there).
            assert get_result(job_id, timeout=30, app=app)["message"] == "no such customer"
            assert "stripe breaker closed" in log.read_text()
            # The gauge is the highest over the worker's processes (livemax): 0 once
            # every process's breaker has probed and closed.
            wait_for(
                lambda: gauge(metrics_port) == {cause: 0.0}, 30, "every process's breaker to close"
            )
    finally:
        worker.stop()


def test_a_refused_key_dead_letters_the_jobs_it_failed_and_they_replay(
    redis_server: RedisServer, logs_dir: Path
) -> None:
    url = redis_server.url(BREAKER_DB + 1)
    redis.Redis.from_url(url).flushdb()
    with run_emulator(api_key=API_KEY) as emulator:
        customers: list[dict[str, Any]] = emulator.admin.seed(2, cards_per_customer=2)
        # One process: each process has its own breaker, and a second one would take the
        # job queued below, fail it on the 401 and dead-letter it too (as a second worker would).
        env = worker_env(
            url, emulator.url, CARDS_BREAKER_PROBE_SECONDS="0.5", CARDS_WORKER_PROCESSES="1"
        )
        log = logs_dir / "breaker-refused.log"
        worker = start_worker(env, log, name="refused")
        app = client_app(url)
        try:
            wait_for(lambda: "the probe succeeded" in log.read_text(), 30, "the first probe")
            # Stripe now refuses the key on every route: as if it had been revoked.
            emulator.admin.configure(
                faults={"error_401": 1.0},
                fault_paths=["POST /v1/customers/{id}", "GET /v1/customers/{id}"],
            )
            first = enqueue_set_default_card(customers[0]["id"], customers[0]["cards"][1], app=app)
            failed = get_result(first, timeout=30, app=app)
            assert failed["data"] is not None and failed["data"]["kind"] == "misconfigured"
            wait_for(lambda: "stripe breaker open" in log.read_text(), 30, "the breaker to open")
            queued = enqueue_set_default_card(customers[1]["id"], customers[1]["cards"][1], app=app)
            with pytest.raises(ResultNotReady):
                get_result(queued, timeout=2, app=app)

            listed = cards_cli(url, "dlq", "list")
            assert [json.loads(line)["job_id"] for line in listed.stdout.splitlines()] == [first]

            emulator.admin.configure(faults={})
            assert get_result(queued, timeout=30, app=app)["status"] is True
            replayed = cards_cli(url, "dlq", "replay", first)
            assert replayed.returncode == 0, replayed.stderr

            def replay_succeeded() -> bool:
                return bool(get_result(first, timeout=0, app=app)["status"])

            wait_for(replay_succeeded, 30, "the replayed job to succeed")
        finally:
            worker.stop()


@pytest.mark.usefixtures("worker")
def test_a_retry_logs_its_cause_and_get_result_names_it(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    customers: list[dict[str, Any]],
    logs_dir: Path,
) -> None:
    customer = customers[0]
    emulator.admin.script_faults(customer["id"], ["error_500"] * 4)
    app = client_app(redis_server.url())
    job = app.send_task(
        TASK_NAME, kwargs={"userId": customer["id"], "default_source": customer["cards"][1]}
    )
    wait_for(lambda: app.AsyncResult(job.id).state == "RETRY", 30, "the job to retry")
    # What `cards result` prints as its one error line (the CLI adds its hint).
    with pytest.raises(ResultNotReady) as waiting:
        get_result(job.id, timeout=0, app=app)
    assert str(waiting.value) == (
        f"job {job.id} has no result yet (state RETRY; last error: server_error: "
        "Stripe server error (500))"
    )
    log = (logs_dir / "session-worker.log").read_text()
    assert f"{job.id}] retry: Retry in " in log
    assert "RetryCause('server_error: Stripe server error (500)')" in log
    assert get_result(job.id, timeout=60, app=app)["status"] is True

"""What operators see: Prometheus metrics summed over the pool (threads or prefork), and logs
that carry job outcomes but no secret and no personal data."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery

from harness.processes import RedisServer, client_app, free_port, nodes_of, run_worker, wait_for
from producers import enqueue_set_default_card, get_result
from stripe_emulator.process import EmulatorProcess
from tests.integration.conftest import API_KEY, worker_env


def scrape(port: int) -> dict[str, float]:
    """Samples of our metrics as {'name{labels}': value}."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("cards_"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def sample(samples: dict[str, float], name: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        value
        for key, value in samples.items()
        if key.split("{")[0] == name and all(w in key for w in wanted)
    )


@pytest.mark.parametrize(
    "pool_args",
    [(), ("-P", "prefork")],
    ids=["plain-command-threads", "prefork-pool-processes"],
)
def test_metrics_count_every_job_across_pool_processes(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    logs_dir: Path,
    customers: list[dict[str, Any]],
    pool_args: tuple[str, ...],
) -> None:
    """Counted where the jobs ran: the main process's own files (threads) or each
    pool process's (prefork), summed by the main process either way."""
    db = 5
    port = free_port()
    env = worker_env(redis_server.url(db), emulator.url, CARDS_METRICS_PORT=str(port))
    app = client_app(redis_server.url(db))
    flaky = customers[3]
    emulator.admin.script_faults(flaky["id"], ["rate_limit", "error_500"])
    with run_worker(
        env, logs_dir / f"metrics-{len(pool_args)}.log", name="metrics", extra_args=pool_args
    ) as worker:
        jobs = [enqueue_set_default_card(c["id"], c["cards"][1], app=app) for c in customers[:3]]
        jobs.append(enqueue_set_default_card(flaky["id"], flaky["cards"][1], app=app))
        missing = enqueue_set_default_card("cus_NoSuchCustomer0", "card_1x", app=app)
        envelopes = [get_result(j, timeout=60, app=app) for j in [*jobs, missing]]
        assert [e["status"] for e in envelopes] == [True, True, True, True, False]

        def counted() -> bool:
            total = sample(scrape(port), "cards_job_outcomes_total")
            return total == 5

        wait_for(counted, 15, "every outcome to be counted")
        samples = scrape(port)
        # Each worker process probes Stripe when it starts (threads: one per core).
        processes = len(nodes_of(worker.log, "metrics"))

    assert sample(samples, "cards_job_outcomes_total", outcome="ok") == 4
    assert sample(samples, "cards_job_outcomes_total", outcome="no_such_customer") == 1
    assert sample(samples, "cards_job_retries_total", reason="rate_limit") == 1
    assert sample(samples, "cards_job_retries_total", reason="server_error") == 1
    # 5 first writes, 2 retried writes, 1 reconciling read after the saved 500; and the
    # breaker's probe when each worker process started (a prefork pool's main process).
    assert sample(samples, "cards_stripe_call_seconds_count") == 8 + processes
    assert sample(samples, "cards_stripe_call_seconds_count", operation="probe") == processes
    assert sample(samples, "cards_stripe_call_seconds_count", operation="update", outcome="ok") == 4


SECRET_LIKE = re.compile(r"sk_(test|live)_[A-Za-z0-9]{6,}")


@pytest.mark.usefixtures("worker")
def test_logs_carry_outcomes_but_no_secret_and_no_personal_data(
    app: Celery,
    emulator: EmulatorProcess,
    logs_dir: Path,
    customers: list[dict[str, Any]],
) -> None:
    # A run with successes and failures through the session worker.
    for customer in customers:
        job_id = enqueue_set_default_card(customer["id"], customer["cards"][1], app=app)
        assert get_result(job_id, timeout=30, app=app)["status"] is True
    failed = enqueue_set_default_card(customers[0]["id"], customers[1]["cards"][0], app=app)
    assert get_result(failed, timeout=30, app=app)["status"] is False

    text = (logs_dir / "session-worker.log").read_text()
    assert API_KEY not in text
    assert not SECRET_LIKE.search(text)
    for customer in customers:
        assert customer["email"] not in text
        assert customer["name"] not in text
        assert customer["phone"] not in text
    outcomes = [
        json.loads(line[line.index("{") :])
        for line in text.splitlines()
        if '"event": "job_finished"' in line
    ]
    by_job = {o["job_id"]: o for o in outcomes}
    assert by_job[failed]["outcome"] == "not_attached"
    assert by_job[failed]["customer"] == customers[0]["id"]
    assert by_job[failed]["attempts"] == 1
    assert set(by_job[failed]) == {
        "event",
        "task",
        "job_id",
        "customer",
        "outcome",
        "attempts",
        "latency_ms",
    }

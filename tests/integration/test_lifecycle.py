"""Workers that crash or are misconfigured, and the ``cards`` command line."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cards.jobs import TASK_NAME
from harness.processes import (
    BIN,
    RedisServer,
    client_app,
    free_port,
    nodes_of,
    start_worker,
    wait_for,
)
from producers import enqueue_set_default_card, get_result
from producers.client import ResultNotReady
from stripe_emulator.process import EmulatorProcess
from tests.integration.conftest import applied_writes, cards_cli, customer_writes, worker_env
from worker.idempotency import idempotency_key

#: A short visibility timeout makes Redis hand a dead worker's job to the next one quickly.
VISIBILITY_TIMEOUT = 4


def test_job_completes_after_its_worker_is_killed_mid_call(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    logs_dir: Path,
    customers: list[dict[str, Any]],
) -> None:
    db = 3
    env = worker_env(
        redis_server.url(db),
        emulator.url,
        CARDS_VISIBILITY_TIMEOUT_SECONDS=str(VISIBILITY_TIMEOUT),
        CARDS_UNACKED_RESTORE_INTERVAL_SECONDS="1",
        CARDS_STRIPE_TIMEOUT_SECONDS="30",
        # The dead worker's customer lock must not block its successor for long.
        CARDS_CUSTOMER_LOCK_SECONDS="5",
    )
    app = client_app(redis_server.url(db))
    customer = customers[0]
    target = customer["cards"][1]
    # The first write is applied and then hangs: the worker is inside the Stripe call.
    emulator.admin.script_faults(customer["id"], ["timeout_after_commit"])
    doomed = start_worker(env, logs_dir / "doomed.log", name="doomed")
    job_id = enqueue_set_default_card(customer["id"], target, app=app)
    wait_for(
        lambda: customer_writes(emulator, customer["id"]) == 1,
        30,
        "the first write to reach the emulator",
    )
    doomed.kill()

    successor = start_worker(env, logs_dir / "successor.log", name="successor")
    try:
        envelope = get_result(job_id, timeout=VISIBILITY_TIMEOUT * 10, app=app)
    finally:
        successor.stop()
    assert envelope["status"] is True
    assert envelope["data"] is not None and envelope["data"]["default_source"] == target
    assert customer_writes(emulator, customer["id"]) == 1
    assert applied_writes(emulator, idempotency_key(job_id)) == 1


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (
            "sk_test_WRONGwrongWRONG",
            "worker is misconfigured: Stripe says its API key was rejected",
        ),
        ("", "worker is misconfigured: STRIPE_API_KEY (or STRIPE_API_KEY_FILE) is not set"),
    ],
    ids=["rejected-key", "no-key"],
)
def test_misconfigured_worker_leaves_jobs_queued_and_says_why_without_leaking_the_key(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    logs_dir: Path,
    customers: list[dict[str, Any]],
    key: str,
    expected: str,
) -> None:
    db = 4
    env = worker_env(redis_server.url(db), emulator.url, STRIPE_API_KEY=key)
    if not key:
        del env["STRIPE_API_KEY"]
    app = client_app(redis_server.url(db))
    app.connection_for_write().default_channel.client.flushdb()
    result = app.send_task(
        TASK_NAME,
        kwargs={"userId": customers[0]["id"], "default_source": customers[0]["cards"][1]},
    )
    log = logs_dir / f"misconfigured-{len(key)}.log"
    worker = start_worker(env, log, name=f"misconfigured{len(key)}")
    try:
        wait_for(lambda: "stripe breaker open" in log.read_text(), 30, "the breaker to open")
        with pytest.raises(ResultNotReady, match="state PENDING"):
            get_result(result.id, timeout=1, app=app)
    finally:
        worker.stop()
    text = log.read_text()
    critical = [line for line in text.splitlines() if "CRITICAL" in line]
    # Once per worker process: each has its breaker (docs/worker.md, worker/siblings.py).
    assert len(critical) == len(nodes_of(text, f"misconfigured{len(key)}"))
    assert all(expected in line for line in critical)
    assert f"stripe: calling {emulator.url}" in text
    assert app.connection_for_write().default_channel.client.llen("cards") == 1  # still queued
    if key:
        assert key not in text
        assert key[-8:] not in text


@pytest.mark.usefixtures("worker")
def test_cli_enqueue_wait_prints_the_envelope(
    redis_server: RedisServer, customers: list[dict[str, Any]]
) -> None:
    customer = customers[0]
    done = cards_cli(
        redis_server.url(),
        "enqueue",
        "--user-id",
        customer["id"],
        "--source",
        customer["cards"][1],
        "--wait",
    )
    assert done.returncode == 0, done.stderr
    envelope = json.loads(done.stdout)
    assert envelope["status"] is True
    assert envelope["data"]["default_source"] == customer["cards"][1]


@pytest.mark.usefixtures("worker")
def test_cli_enqueue_then_result(
    redis_server: RedisServer, customers: list[dict[str, Any]]
) -> None:
    customer = customers[1]
    enqueued = cards_cli(
        redis_server.url(),
        "enqueue",
        "--user-id",
        customer["id"],
        "--source",
        customer["sources"][0],
        "--job-id",
        "cli-job-1",
    )
    assert enqueued.returncode == 0, enqueued.stderr
    assert enqueued.stdout.strip() == "cli-job-1"
    shown = cards_cli(redis_server.url(), "result", "cli-job-1", "--wait", "30")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["data"]["default_source"] == customer["sources"][0]


@pytest.mark.usefixtures("worker")
def test_cli_failed_job_exits_non_zero(redis_server: RedisServer) -> None:
    done = cards_cli(
        redis_server.url(), "enqueue", "--user-id", "cus_Nobody0", "--source", "card_1", "--wait"
    )
    assert done.returncode == 1
    assert json.loads(done.stdout)["message"] == "no such customer"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ("enqueue", "--user-id", "usr_1", "--source", "card_1"),
            2,
            'error: invalid job: userId must start with "cus_"',
        ),
        (
            ("enqueue", "--user-id", "cus_1", "--source", "tok_1"),
            2,
            "error: invalid job: default_source must start with",
        ),
        (
            ("result", "never-enqueued-job"),
            3,
            "error: job never-enqueued-job has no result yet (state PENDING); wait with --wait",
        ),
        (
            ("result", "never-enqueued-job", "--wait", "0.5"),
            3,
            "error: job never-enqueued-job has no result yet (state PENDING); wait with --wait",
        ),
        (
            ("result", "bad id!"),
            2,
            "error: JOB_ID must be letters, digits and _ . : - only",
        ),
    ],
)
def test_cli_errors_are_one_line_without_traceback(
    redis_server: RedisServer, args: tuple[str, ...], code: int, message: str
) -> None:
    done = cards_cli(redis_server.url(), *args)
    assert done.returncode == code
    assert done.stderr.startswith(message)
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr
    assert "Exception ignored" not in done.stderr


WAIT_BRIEFLY = ("--wait", "--timeout", "0.5")


def test_cli_enqueue_wait_timeout_is_one_line(redis_server: RedisServer) -> None:
    url = redis_server.url()
    done = subprocess.run(
        [str(BIN / "cards"), "enqueue", "--user-id", "cus_1", "--source", "card_1", *WAIT_BRIEFLY],
        env={
            **os.environ,
            "CELERY_BROKER_URL": url,
            "CELERY_RESULT_BACKEND": url,
            "CARDS_QUEUE": "cards.nobody-reads-this",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3
    assert "has no result yet (state PENDING); wait with --wait" in done.stderr
    assert "queue cards.nobody-reads-this" in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


def test_cli_unreachable_broker_is_one_line_and_hides_the_password() -> None:
    url = f"redis://:hunter2secret@127.0.0.1:{free_port()}/0"
    done = cards_cli(url, "enqueue", "--user-id", "cus_1", "--source", "card_1")
    assert done.returncode == 4
    assert done.stderr.startswith("error: cannot reach the broker or result backend at redis://")
    assert "hunter2secret" not in done.stderr
    assert done.stderr.count("\n") == 1


def test_producers_never_import_stripe_or_the_worker() -> None:
    probe = (
        "import sys, producers, producers.cli; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('stripe', 'worker')]; "
        "assert not bad, bad"
    )
    subprocess.run([str(BIN / "python"), "-c", probe], check=True, timeout=60)

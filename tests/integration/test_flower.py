"""Flower, started by ``cards flower``, shows job ids, states and messages, and no customer data.

Flower builds its task list from the workers' events. The session worker's
task-succeeded events carry ``{status, message}`` instead of the customer,
and every event's args/kwargs carry only the job id, so ``/api/tasks`` can be
read in full without finding an email, a name or a phone number. A job that
ends ``status: false`` is FAILURE in Flower (its "Failed" filter) while its
envelope stays in the result backend, read as before.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery

from cards.batches import BATCH_TASK_NAME
from cards.deliveries import callback_task_id
from cards.envelope import SUCCESS_MESSAGE
from cards.redaction import batch_reprs
from cards.settings import get_settings
from harness.processes import (
    BIN,
    REPO_ROOT,
    CeleryWorker,
    RedisServer,
    free_port,
    nodes_of,
    wait_for,
)
from harness.receiver import CallbackReceiver, run_receiver
from producers import enqueue_set_default_card, get_result
from tests.integration.conftest import RECEIVER_ALLOWED, RECEIVER_PORT, cards_cli

AUTH = ("ops", "flower-integration-password")
STARTUP_TIMEOUT = 60
EVENTS_TIMEOUT = 30


def cards_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARDS_", "FLOWER_"))}
    return {**env, "CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url, **extra}


@pytest.fixture(scope="module")
def flower(redis_server: RedisServer, logs_dir: Path) -> Iterator[httpx.Client]:
    port = free_port()
    log_path = logs_dir / "flower.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(BIN / "cards"), "flower", "--port", str(port)],
            cwd=REPO_ROOT,
            env=cards_env(redis_server.url(), CARDS_FLOWER_BASIC_AUTH=":".join(AUTH)),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=AUTH, trust_env=False)
    try:

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"flower exited early:\n{log_path.read_text()[-3000:]}")
            try:
                return client.get("/healthcheck").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(answers, STARTUP_TIMEOUT, "Flower to answer")
        yield client
    finally:
        client.close()
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    with run_receiver(RECEIVER_PORT) as running:
        yield running


def tasks_once_succeeded(flower: httpx.Client, expected: set[str]) -> dict[str, Any]:
    """Flower's task list, once it shows every task of ``expected`` as SUCCESS."""
    tasks: dict[str, Any] = {}

    def all_succeeded() -> bool:
        tasks.clear()
        tasks.update(flower.get("/api/tasks").json())
        return all(tasks.get(task_id, {}).get("state") == "SUCCESS" for task_id in expected)

    wait_for(all_succeeded, EVENTS_TIMEOUT, "Flower to show every job as SUCCESS")
    return tasks


def sees_a_worker(flower: httpx.Client) -> bool:
    """Flower's event receiver is connected once a worker's heartbeat has reached it."""
    answer = flower.get("/workers", params={"json": 1})
    return answer.status_code == 200 and bool(answer.json().get("data"))


def test_flower_sees_every_process_of_the_plain_worker_command_and_their_jobs(
    flower: httpx.Client,
    worker: CeleryWorker,
    app: Celery,
    customers: list[dict[str, Any]],
) -> None:
    """``celery -A worker worker`` runs one process per core (worker.siblings); Flower's
    worker page, built from events, lists each, and shows the jobs each one ran."""
    nodes = nodes_of(worker.log, "w1")
    assert len(nodes) > 1 or len(os.sched_getaffinity(0)) == 1, nodes

    def lists_every_node() -> bool:
        answer = flower.get("/workers", params={"json": 1})
        return answer.status_code == 200 and {
            row.get("hostname") for row in answer.json().get("data", [])
        } >= set(nodes)

    wait_for(lists_every_node, STARTUP_TIMEOUT, f"Flower's worker page to list {nodes}")
    job_ids = [
        enqueue_set_default_card(customer["id"], customer["cards"][0], app=app)
        for customer in customers[:8]
    ]
    for job_id in job_ids:
        assert get_result(job_id, timeout=30, app=app)["status"] is True
    tasks = tasks_once_succeeded(flower, set(job_ids))
    assert {tasks[job_id]["worker"] for job_id in job_ids} <= set(nodes)


@pytest.mark.usefixtures("worker")
def test_flower_lists_jobs_without_customer_data(
    flower: httpx.Client,
    app: Celery,
    redis_server: RedisServer,
    receiver: CallbackReceiver,
    customers: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wait_for(lambda: sees_a_worker(flower), STARTUP_TIMEOUT, "Flower to see the session worker")
    monkeypatch.setenv("CARDS_CALLBACK_ALLOWED_HOSTS", RECEIVER_ALLOWED)
    get_settings.cache_clear()
    job_ids = [
        enqueue_set_default_card(customer["id"], customer["cards"][1], app=app)
        for customer in customers[:3]
    ]
    with_callback = enqueue_set_default_card(
        customers[3]["id"], customers[3]["cards"][1], callback_url=receiver.url("/f"), app=app
    )
    get_settings.cache_clear()
    for job_id in [*job_ids, with_callback]:
        assert get_result(job_id, timeout=30, app=app)["status"] is True
    tasks = tasks_once_succeeded(flower, {*job_ids, with_callback, callback_task_id(with_callback)})
    for job_id in [*job_ids, with_callback]:
        assert tasks[job_id]["name"] == "cards.set_default_card"
        assert tasks[job_id]["result"] == repr({"status": True, "message": SUCCESS_MESSAGE})
        assert tasks[job_id]["kwargs"] == repr({"job_id": job_id})
        assert tasks[job_id]["args"] == "()"
    delivery = tasks[callback_task_id(with_callback)]
    assert delivery["name"] == "cards.deliver_callback"
    assert delivery["kwargs"] == repr({"job_id": with_callback})
    assert "'delivered': True" in delivery["result"]

    text = flower.get("/api/tasks").text
    for customer in customers:
        for field in ("email", "name", "phone"):
            assert customer[field], field
            assert customer[field] not in text, f"{field} of {customer['id']} shown by Flower"


@pytest.mark.usefixtures("worker")
def test_flower_shows_a_false_status_as_failed_and_a_batch_by_migration(
    flower: httpx.Client,
    app: Celery,
    redis_server: RedisServer,
    customers: list[dict[str, Any]],
) -> None:
    wait_for(lambda: sees_a_worker(flower), STARTUP_TIMEOUT, "Flower to see the session worker")
    failed = enqueue_set_default_card("cus_FlowerNoSuchCustomer", "card_1FlowerNoSuchCard", app=app)
    good = enqueue_set_default_card(customers[0]["id"], customers[0]["cards"][1], app=app)
    migration_id = "mflower-check"
    batch_id = "flower-batch-1"
    rows = [
        {
            "userId": customers[1]["id"],
            "default_source": customers[1]["cards"][1],
            "job_id": "fb:1",
        },
        {"userId": "cus_FlowerNoSuchCustomer", "default_source": "card_1X", "job_id": "fb:2"},
    ]
    app.send_task(
        BATCH_TASK_NAME,
        kwargs={"jobs": rows, "migration_id": migration_id},
        task_id=batch_id,
        **batch_reprs(batch_id, migration_id, len(rows)),
    )

    # Consumers read the same envelope as before: state SUCCESS, status false.
    envelope = get_result(failed, timeout=30, app=app)
    assert envelope["status"] is False
    assert envelope["message"] == "no such customer"
    assert envelope["data"]["kind"] == "no_such_customer"
    assert app.AsyncResult(failed).state == "SUCCESS"
    shown = cards_cli(redis_server.url(), "result", failed)
    assert shown.returncode == 1
    assert '"kind": "no_such_customer"' in shown.stdout
    assert get_result("fb:2", timeout=30, app=app)["status"] is False

    def listed(state: str) -> dict[str, Any]:
        return dict(flower.get("/api/tasks", params={"state": state}).json())

    def shown_as_failed() -> bool:
        return failed in listed("FAILURE") and good in listed("SUCCESS")

    wait_for(shown_as_failed, EVENTS_TIMEOUT, "Flower to list the failed jobs under FAILURE")
    failures, successes = listed("FAILURE"), listed("SUCCESS")
    assert good not in failures and failed not in successes
    assert failures[failed]["result"] == repr({"status": False, "message": "no such customer"})
    assert failures[failed]["exception"] == "no_such_customer: no such customer"
    assert successes[good]["result"] == repr({"status": True, "message": SUCCESS_MESSAGE})

    def batch_listed() -> bool:
        return flower.get("/api/tasks").json().get(batch_id, {}).get("state") == "SUCCESS"

    wait_for(batch_listed, EVENTS_TIMEOUT, "Flower to list the batch")
    batch = flower.get("/api/tasks").json()[batch_id]
    assert batch["name"] == BATCH_TASK_NAME
    assert f"'migration_id': '{migration_id}'" in batch["kwargs"]
    assert "'rows': 2" in batch["kwargs"]
    assert customers[1]["id"] not in batch["kwargs"]
    assert "1 answered" in batch["result"] or "2 answered" in batch["result"]

    # The task list shows the result and the exception columns.
    page = flower.get("/tasks").text
    assert 'data-column="result"' in page and 'data-column="exception"' in page


def test_flower_refuses_requests_without_the_password(flower: httpx.Client) -> None:
    base = str(flower.base_url)
    with httpx.Client(base_url=base, trust_env=False) as anonymous:
        assert anonymous.get("/api/tasks").status_code == 401
        assert anonymous.get("/api/tasks", auth=("ops", "wrong")).status_code == 401
        assert anonymous.get("/workers").status_code == 401
    assert flower.get("/api/tasks").status_code == 200


def test_cards_flower_refuses_to_start_without_auth(redis_server: RedisServer) -> None:
    done = subprocess.run(
        [str(BIN / "cards"), "flower", "--port", str(free_port())],
        env=cards_env(redis_server.url()),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: CARDS_FLOWER_BASIC_AUTH (user:password) is not set")
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize("auth", ["admin:x", "admin:change-me"])
def test_cards_flower_refuses_a_weak_password(redis_server: RedisServer, auth: str) -> None:
    done = subprocess.run(
        [str(BIN / "cards"), "flower", "--port", str(free_port())],
        env=cards_env(redis_server.url(), CARDS_FLOWER_BASIC_AUTH=auth),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "error: CARDS_FLOWER_BASIC_AUTH entry 1: the password must be at least 12 characters\n"
    )

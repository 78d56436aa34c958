"""Flower, started by ``cards flower``, shows job ids, states and messages, and no customer data.

Flower builds its task list from the workers' events. The session worker's
task-succeeded events carry ``{status, message}`` instead of the customer,
and every event's args/kwargs carry only the job id, so ``/api/tasks`` can be
read in full without finding an email, a name or a phone number.
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

from cards.deliveries import callback_task_id
from cards.envelope import SUCCESS_MESSAGE
from cards.settings import get_settings
from harness.processes import BIN, REPO_ROOT, RedisServer, free_port, wait_for
from harness.receiver import CallbackReceiver, run_receiver
from producers import enqueue_set_default_card, get_result
from tests.integration.conftest import RECEIVER_ALLOWED, RECEIVER_PORT

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


def sees_a_worker(flower: httpx.Client) -> bool:
    """Flower's event receiver is connected once a worker's heartbeat has reached it."""
    answer = flower.get("/workers", params={"json": 1})
    return answer.status_code == 200 and bool(answer.json().get("data"))


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
    expected = {*job_ids, with_callback, callback_task_id(with_callback)}
    tasks: dict[str, Any] = {}

    def all_succeeded() -> bool:
        tasks.clear()
        tasks.update(flower.get("/api/tasks").json())
        return all(tasks.get(task_id, {}).get("state") == "SUCCESS" for task_id in expected)

    wait_for(all_succeeded, EVENTS_TIMEOUT, "Flower to show every job as SUCCESS")
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

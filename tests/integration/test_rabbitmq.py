"""RabbitMQ as the broker: what works on Redis works on quorum queues.

The session's private RabbitMQ node (``rabbit_node``) carries the jobs, in a
vhost of this module's own; the private redis-server holds results, job state,
locks and dead letters. Real workers, gateway, Flower and ``cards`` commands,
started as a user would, with ``CELERY_BROKER_URL=amqp://…``. The README's
commands run as printed, so against the machine's node at 127.0.0.1:5672 (used
with queue names of their own, never reconfigured).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import amqp
import httpx
import pytest
import redis
from celery import Celery
from kombu import Producer

from cards.settings import get_settings
from harness.gateway_process import run_gateway
from harness.processes import (
    BIN,
    BULK_POOL,
    REPO_ROOT,
    CeleryWorker,
    RedisServer,
    client_app,
    free_port,
    run_worker,
    wait_for,
)
from harness.rabbitmq import SYSTEM_URL, RabbitNode, answers, own_vhost, unique_queues
from harness.receiver import run_receiver
from producers import enqueue_set_default_card, get_callback_status, get_result
from producers.migrate.store import MigrationStore
from producers.queues import queue_depth
from stripe_emulator.process import EmulatorProcess
from tests.integration.conftest import (
    API_KEY,
    RECEIVER_ALLOWED,
    RECEIVER_PORT,
    applied_writes,
    customer_writes,
    worker_env,
)
from tests.integration.test_hostile_input import PROTOCOL_HEADERS, SHAPES
from worker.idempotency import idempotency_key

pytestmark = [pytest.mark.rabbitmq]

#: The result backend's database for this module (the session worker uses 0).
RESULTS_DB = 11
API_KEY_HEADER = "rabbit-integration-key-0123456789"


@pytest.fixture(scope="module")
def broker_url(rabbit_node: RabbitNode) -> Iterator[str]:
    """This module's vhost on the session's node, deleted with its queues at the end."""
    with own_vhost(rabbit_node, "cards-it") as vhost:
        yield rabbit_node.url(vhost)


@pytest.fixture(scope="module")
def queues() -> Iterator[dict[str, str]]:
    """This module's queue names, in this process's settings too (producers read them)."""
    names = unique_queues("cards-it")
    before = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    os.environ["CARDS_CALLBACK_ALLOWED_HOSTS"] = RECEIVER_ALLOWED
    get_settings.cache_clear()
    yield names
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    os.environ.pop("CARDS_CALLBACK_ALLOWED_HOSTS", None)
    get_settings.cache_clear()


def _delete_queues(names: list[str]) -> None:
    """Remove this module's queues and exchanges from the machine's node (nothing else)."""
    connection = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest")
    connection.connect()
    try:
        channel = connection.channel()
        for name in names:
            channel.queue_delete(name)
            channel.exchange_delete(name)
    finally:
        connection.close()


@pytest.fixture(scope="module")
def results_url(redis_server: RedisServer) -> str:
    url = redis_server.url(RESULTS_DB)
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="module")
def env(
    broker_url: str, queues: dict[str, str], results_url: str, emulator: EmulatorProcess
) -> dict[str, str]:
    return worker_env(
        results_url,
        emulator.url,
        CELERY_BROKER_URL=broker_url,
        CELERY_RESULT_BACKEND=results_url,
        **queues,
    )


@pytest.fixture(scope="module")
def rabbit_worker(env: dict[str, str], logs_dir: Path) -> Iterator[CeleryWorker]:
    with run_worker(env, logs_dir / "rabbit-worker.log", name="rabbit") as process:
        yield process


@pytest.fixture(scope="module")
def rabbit_app(broker_url: str, queues: dict[str, str], results_url: str) -> Celery:
    return client_app(broker_url, results_url)


def cards(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The ``cards`` command with this module's settings, as a user runs it."""
    return subprocess.run(
        [str(BIN / "cards"), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )


def test_an_amqp_broker_without_a_redis_url_is_a_clear_settings_error() -> None:
    done = subprocess.run(
        [str(BIN / "cards"), "result", str(uuid.uuid4())],
        env={**os.environ, "CELERY_BROKER_URL": SYSTEM_URL, "CELERY_RESULT_BACKEND": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "CELERY_RESULT_BACKEND to a Redis URL" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.usefixtures("rabbit_worker")
def test_a_job_runs_through_a_quorum_queue_with_confirms(
    rabbit_app: Celery, queues: dict[str, str], emulator: EmulatorProcess
) -> None:
    customer = emulator.admin.seed(1, cards_per_customer=2)[0]
    job_id = enqueue_set_default_card(customer["id"], customer["cards"][1], app=rabbit_app)
    envelope = get_result(job_id, timeout=30, app=rabbit_app)
    assert envelope["status"] is True
    assert applied_writes(emulator, idempotency_key(job_id)) == 1
    with rabbit_app.connection_for_write() as connection:
        # kombu's own py-amqp transport, not our Redis one; publishes wait for confirms.
        assert type(connection.transport).__module__ == "kombu.transport.pyamqp"
        assert (connection.transport_options or {})["confirm_publish"] is True
        channel: Any = connection.channel()
        # Declared as a classic queue, the job queue refuses: it is a quorum queue.
        with pytest.raises(amqp.exceptions.PreconditionFailed, match="x-queue-type"):
            channel.queue_declare(
                queues["CARDS_QUEUE"], durable=True, auto_delete=False, arguments={}
            )
    assert queue_depth(queues["CARDS_QUEUE"], rabbit_app) == 0


@pytest.mark.usefixtures("rabbit_worker")
def test_a_retry_countdown_waits_in_the_broker_and_writes_once(
    rabbit_app: Celery, emulator: EmulatorProcess, rabbit_worker: CeleryWorker
) -> None:
    customer = emulator.admin.seed(1, cards_per_customer=2)[0]
    emulator.admin.script_faults(customer["id"], ["error_500", "timeout_after_commit"])
    job_id = enqueue_set_default_card(customer["id"], customer["cards"][1], app=rabbit_app)
    envelope = get_result(job_id, timeout=60, app=rabbit_app)
    assert envelope["status"] is True
    assert customer_writes(emulator, customer["id"]) == 1
    log = rabbit_worker.log
    assert "Global QoS is disabled" in log
    assert f"Task cards.set_default_card[{job_id}] retry" in log


@pytest.mark.usefixtures("rabbit_worker")
def test_callbacks_are_delivered(
    rabbit_app: Celery, emulator: EmulatorProcess, results_url: str
) -> None:
    customer = emulator.admin.seed(1, cards_per_customer=2)[0]
    with run_receiver(RECEIVER_PORT) as receiver:
        where = f"/rabbit/{uuid.uuid4().hex}"
        job_id = enqueue_set_default_card(
            customer["id"], customer["cards"][1], callback_url=receiver.url(where), app=rabbit_app
        )
        assert get_result(job_id, timeout=30, app=rabbit_app)["status"] is True

        def delivered() -> bool:
            status = get_callback_status(job_id, redis_url=results_url)
            return status is not None and status["state"] == "delivered"

        wait_for(delivered, 30, "the callback to be delivered")
        [request] = receiver.received(where)
    assert request.headers["webhook-id"] == job_id


@pytest.mark.usefixtures("rabbit_worker")
def test_dead_letters_are_kept_and_replayed_once(
    rabbit_app: Celery, emulator: EmulatorProcess, env: dict[str, str]
) -> None:
    customer = emulator.admin.seed(1, cards_per_customer=2)[0]
    emulator.admin.script_faults(customer["id"], ["rate_limit"] * 50)
    job_id = enqueue_set_default_card(customer["id"], customer["cards"][1], app=rabbit_app)
    assert get_result(job_id, timeout=60, app=rabbit_app)["status"] is False
    listed = cards(env, "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    assert job_id in [json.loads(line)["job_id"] for line in listed.stdout.splitlines()]
    emulator.admin.clear_faults(customer["id"])
    replayed = cards(env, "dlq", "replay", job_id)
    assert replayed.returncode == 0, replayed.stderr
    wait_for(
        lambda: get_result(job_id, timeout=5, app=rabbit_app)["status"] is True,
        30,
        "the replayed job to succeed",
    )
    assert customer_writes(emulator, customer["id"]) == 1


def test_malformed_messages_are_refused_and_the_queue_keeps_flowing(
    rabbit_app: Celery,
    rabbit_worker: CeleryWorker,
    queues: dict[str, str],
    emulator: EmulatorProcess,
) -> None:
    ids: dict[str, str] = {}
    with rabbit_app.connection_for_write() as connection:
        producer = Producer(connection)
        for name, (body, content_type, _) in SHAPES.items():
            ids[name] = str(uuid.uuid4())
            producer.publish(
                body,
                routing_key=queues["CARDS_QUEUE"],
                exchange="",
                content_type=content_type,
                content_encoding="binary",
                headers={**PROTOCOL_HEADERS, "id": ids[name], "root_id": ids[name]},
            )
    customer = emulator.admin.seed(1, cards_per_customer=2)[0]
    good = enqueue_set_default_card(customer["id"], customer["cards"][1], app=rabbit_app)
    assert get_result(good, timeout=30, app=rabbit_app)["status"] is True
    assert rabbit_worker.alive
    for name, (_, _, expected) in SHAPES.items():
        if expected is not None:
            envelope = get_result(ids[name], timeout=30, app=rabbit_app)
            assert envelope["message"] == f"invalid job: {expected}", name


@pytest.mark.usefixtures("rabbit_worker")
def test_the_gateway_queues_and_answers(
    env: dict[str, str], emulator: EmulatorProcess, logs_dir: Path
) -> None:
    customer = emulator.admin.seed(1, cards_per_customer=2)[0]
    gateway_env = {**env, "CARDS_GATEWAY_API_KEYS": API_KEY_HEADER}
    with (
        run_gateway(gateway_env, logs_dir / "rabbit-gateway.log") as gateway,
        httpx.Client(
            base_url=gateway.url,
            headers={"Authorization": f"Bearer {API_KEY_HEADER}"},
            trust_env=False,
            timeout=30,
        ) as http,
    ):
        assert http.get("/healthz").status_code == 200
        answer = http.post(
            "/api/cards/default?wait=20",
            json={"userId": customer["id"], "default_source": customer["cards"][1]},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["default_source"] == customer["cards"][1]


def test_a_killed_migration_resumes_on_the_bulk_quorum_queue(
    env: dict[str, str],
    queues: dict[str, str],
    results_url: str,
    emulator: EmulatorProcess,
    logs_dir: Path,
    tmp_path: Path,
) -> None:
    customers: list[dict[str, Any]] = emulator.admin.seed(120, cards_per_customer=2)
    source = tmp_path / "rows.csv"
    source.write_text(
        "userId,default_source\n" + "".join(f"{c['id']},{c['cards'][1]}\n" for c in customers),
        encoding="utf-8",
    )
    bulk = ("-Q", queues["CARDS_BULK_QUEUE"], *BULK_POOL)
    with run_worker(
        env, logs_dir / "rabbit-bulk.log", concurrency=2, name="rbulk", extra_args=bulk
    ):
        producer = subprocess.Popen(
            [str(BIN / "cards"), "migrate", "run", str(source), "--quiet", "--window", "4"],
            env={**os.environ, **env, "CARDS_BULK_BATCH_ROWS": "5"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert producer.stdout is not None and producer.stderr is not None
        ident = producer.stdout.readline().split()[1].rstrip(":")
        store = MigrationStore(redis.Redis.from_url(results_url))

        def some_done() -> bool:
            record = store.get(ident)
            return record is not None and record.done >= 20

        wait_for(some_done, 60, "20 rows of the migration done")
        producer.send_signal(signal.SIGKILL)
        producer.wait(10)
        producer.stdout.close()
        producer.stderr.close()
        resumed = cards(env, "migrate", "resume", ident, "--quiet", "--window", "4")
    assert resumed.returncode == 0, resumed.stderr
    assert "120 rows, 120 done, 0 failed, 0 invalid" in resumed.stdout
    by_customer = emulator.admin.ledger()["writes_applied_by_customer"]
    assert [by_customer.get(c["id"], 0) for c in customers] == [1] * 120


def start_flower(
    env: dict[str, str], log_path: Path, auth: tuple[str, str]
) -> subprocess.Popen[bytes]:
    """``cards flower`` on a free port (``env["FLOWER_PORT"]``) behind ``auth``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [str(BIN / "cards"), "flower", "--port", env["FLOWER_PORT"]],
            cwd=REPO_ROOT,
            env={**os.environ, **env, "CARDS_FLOWER_BASIC_AUTH": ":".join(auth)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


FLOWER_AUTH = ("ops", "flower-rabbit-password-xyz")


@pytest.fixture(scope="module")
def flower(
    env: dict[str, str], rabbit_node: RabbitNode, rabbit_worker: CeleryWorker, logs_dir: Path
) -> Iterator[httpx.Client]:
    """``cards flower`` on this module's vhost, with RabbitMQ's management API."""
    management = rabbit_node.management_url()
    assert management is not None
    flower_env = {**env, "FLOWER_BROKER_API": management, "FLOWER_PORT": str(free_port())}
    process = start_flower(flower_env, logs_dir / "rabbit-flower.log", FLOWER_AUTH)
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{flower_env['FLOWER_PORT']}",
            auth=FLOWER_AUTH,
            trust_env=False,
        ) as client:
            yield client
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)


def shows(flower: httpx.Client, path: str, want: str, **params: str) -> bool:
    """Whether Flower's page at ``path`` answers 200 with ``want`` in it (False while
    it boots)."""
    try:
        answer = flower.get(path, params=params)
    except httpx.TransportError:
        return False
    return answer.status_code == 200 and want in answer.text


def test_flower_sees_the_worker_and_its_jobs(
    flower: httpx.Client, rabbit_app: Celery, emulator: EmulatorProcess
) -> None:
    wait_for(lambda: shows(flower, "/workers", "rabbit@", json="1"), 60, "Flower's workers")
    customer = emulator.admin.seed(1, cards_per_customer=2)[0]
    job_id = enqueue_set_default_card(customer["id"], customer["cards"][1], app=rabbit_app)
    get_result(job_id, timeout=30, app=rabbit_app)
    wait_for(lambda: shows(flower, "/api/tasks", job_id, json="1"), 30, "Flower to list the job")


def test_flowers_broker_page_reads_the_management_api(
    flower: httpx.Client, queues: dict[str, str]
) -> None:
    # The job queue's row, with its counts from the management API (for this vhost).
    row = f"<td>{queues['CARDS_QUEUE']}</td>"
    wait_for(lambda: shows(flower, "/broker", row), 60, "Flower's Broker page to list the queue")


def readme_block(heading: str) -> str:
    """The first ```sh block under ``heading`` in README.md, as printed."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(f"\n{heading}\n", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_the_readmes_rabbitmq_commands_start_a_worker_that_runs_jobs(
    queues: dict[str, str],
    emulator: EmulatorProcess,
    logs_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not answers("127.0.0.1", 5672):
        pytest.fail("the machine's RabbitMQ does not answer on 127.0.0.1:5672 (guest/guest)")
    block = readme_block("## Choosing a broker")
    assert "CELERY_BROKER_URL='amqp://" in block
    # Queues of its own (the module's worker must not take its job), in this process too.
    own = unique_queues("cards-readme")
    for name, value in own.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    # As printed; the queue names and the emulator come from the environment.
    env = {
        **os.environ,
        **own,
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_API_BASE": emulator.url,
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    log_path = logs_dir / "rabbit-readme-worker.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            ["bash", "-c", block],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # Without -l info the worker logs no "ready." line: its banner, then the job, say it.
        wait_for(lambda: "[queues]" in log_path.read_text(errors="replace"), 60, "the worker")
        assert "transport:   amqp://guest:**@127.0.0.1:5672//" in log_path.read_text()
        app = client_app(SYSTEM_URL, "redis://127.0.0.1:6379/0")
        customer = emulator.admin.seed(1, cards_per_customer=2)[0]
        job_id = enqueue_set_default_card(customer["id"], customer["cards"][1], app=app)
        assert get_result(job_id, timeout=60, app=app)["status"] is True
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
        monkeypatch.undo()
        get_settings.cache_clear()
        _delete_queues(list(own.values()))

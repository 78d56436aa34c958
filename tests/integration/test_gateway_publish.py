"""The gateway's send on the event loop (``producers.http.publish``), against real parts.

- A ``cards gateway`` process queues a job through its asyncio broker connection
  (``cards-gateway-publish`` in ``CLIENT LIST``), publishes the ``task-sent`` event
  Flower reads, marks its claim sent, and a real ``celery -A worker worker`` runs
  the job; the same with signed messages (a worker that refuses unsigned ones) and
  the claims in another database; on a Sentinel deployment's master; and again
  after Redis restarts under the gateway. A burst of first sends builds the
  publisher (its recording channel, its broker connection) once. With tracing
  on, the job carries the trace of the request that sent it.
- Message for message, the gateway's task message and its event are what Celery's
  blocking send writes for the same job (byte for byte but the delivery tag, the
  event's clock and time), plain and signed; and a stock Celery client's message
  reads the same to the worker: the same headers, properties and body.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cards.settings import Settings
from cards.tracing import enable_tracing
from harness.chaos import run_restartable_redis
from harness.gateway_process import run_gateway
from harness.processes import (
    BIN,
    REPO_ROOT,
    RedisServer,
    client_app,
    run_redis,
    run_worker,
    wait_for,
)
from harness.sentinel import run_sentinel_cluster
from producers.client import build_job
from producers.http import publish
from producers.http.app import create_app
from producers.http.publish import Publisher
from stripe_emulator.process import EmulatorProcess
from tests.integration.conftest import worker_env
from tests.integration.test_security import make_signing_files

pytestmark = pytest.mark.timeout(240)

KEY = "publish-gateway-key-0123456789"
QUEUE = "cards"
TASK = "cards.set_default_card"
#: Where kombu's Redis transport publishes Celery's task-sent events (database 0).
TASK_SENT_CHANNEL = "/0.celeryev/task.sent"
JOB_TIMEOUT = 30


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with run_redis() as private:
        yield private


def publishing_client(client: redis.Redis) -> dict[str, Any]:
    [entry] = [c for c in client.client_list() if c.get("name") == "cards-gateway-publish"]
    return entry


@pytest.mark.parametrize("signed", [False, True], ids=["plain", "signed"])
def test_a_job_sent_on_the_event_loop_is_run_by_a_real_worker(
    server: RedisServer, emulator: EmulatorProcess, logs_dir: Path, tmp_path: Path, signed: bool
) -> None:
    url = server.url()
    signing = make_signing_files(tmp_path) if signed else {}
    # Signed, the claims live in another database: marked sent on their own.
    claims_url = server.url(1) if signed else url
    env = worker_env(
        url, emulator.url, CARDS_GATEWAY_API_KEYS=KEY, CARDS_STATE_REDIS_URL=claims_url, **signing
    )
    [customer] = emulator.admin.seed(1, cards_per_customer=2)
    card = customer["cards"][1]
    client = redis.Redis.from_url(url)
    events = client.pubsub()
    events.subscribe(TASK_SENT_CHANNEL)
    name = "signed" if signed else "plain"
    with (
        run_worker(env, logs_dir / f"publish-{name}-worker.log", name=f"publish-{name}"),
        run_gateway(env, logs_dir / f"publish-{name}-gateway.log") as gateway,
        httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {KEY}"}) as http,
    ):
        answer = http.post(
            "/api/cards/default", json={"userId": customer["id"], "default_source": card}
        )
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["data"]["job_id"]
        # The message, its event and (claims on the broker's Redis) the claim went out
        # in one pipeline (a MULTI/EXEC) on the gateway's asyncio connection.
        assert publishing_client(client)["cmd"] == ("publish" if signed else "exec")
        claim = redis.Redis.from_url(claims_url).get(f"cards:job-owner:{job_id}")
        assert claim is not None and json.loads(claim)["sent"] is True

        def done() -> bool:
            status = http.get(answer.json()["data"]["status_url"], timeout=JOB_TIMEOUT)
            return bool(status.json()["data"]["state"] == "done")

        wait_for(done, JOB_TIMEOUT, "the job to be done")
    assert emulator.admin.get_customer(customer["id"])["default_source"] == card
    sent = next_event(events)
    assert sent["type"] == "task-sent"
    assert (sent["uuid"], sent["name"], sent["queue"]) == (job_id, TASK, QUEUE)
    assert sent["kwargs"] == repr({"job_id": job_id})  # the job id only, never the fields


def test_on_sentinel_a_job_is_sent_on_the_event_loop_to_the_master(
    emulator: EmulatorProcess, logs_dir: Path, tmp_path: Path
) -> None:
    [customer] = emulator.admin.seed(1, cards_per_customer=2)
    card = customer["cards"][1]
    with run_sentinel_cluster(tmp_path / "sentinel") as cluster:
        env = worker_env(cluster.url(), emulator.url, CARDS_GATEWAY_API_KEYS=KEY)
        with (
            run_worker(env, logs_dir / "publish-sentinel-worker.log", name="publish-sentinel"),
            run_gateway(env, logs_dir / "publish-sentinel-gateway.log") as gateway,
            httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {KEY}"}) as http,
        ):
            answer = http.post(
                "/api/cards/default?wait=20",
                json={"userId": customer["id"], "default_source": card},
                timeout=JOB_TIMEOUT,
            )
            assert answer.status_code == 200, answer.text
            assert publishing_client(cluster.client())["cmd"] == "exec"  # on the master
    assert emulator.admin.get_customer(customer["id"])["default_source"] == card


def test_after_a_redis_restart_the_gateway_queues_again(
    emulator: EmulatorProcess, logs_dir: Path, tmp_path: Path
) -> None:
    body = {"userId": "cus_A1", "default_source": "card_B2"}
    with run_restartable_redis(tmp_path / "redis") as server:
        env = worker_env(server.url(), emulator.url, CARDS_GATEWAY_API_KEYS=KEY)
        with (
            run_gateway(env, logs_dir / "publish-restart-gateway.log") as gateway,
            httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {KEY}"}) as http,
        ):
            first = http.post("/api/cards/default", json=body)
            server.restart(crash=True)  # every connection the gateway holds is dead
            second = http.post("/api/cards/default", json=body, timeout=JOB_TIMEOUT)
        client = server.client()
        assert (first.status_code, second.status_code) == (202, 202), second.text
        assert client.llen(QUEUE) == 2
        for answer in (first, second):
            claim = client.get(f"cards:job-owner:{answer.json()['data']['job_id']}")
            assert claim is not None and json.loads(claim)["sent"] is True


def test_a_burst_of_first_sends_builds_the_publisher_once(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A gateway that starts under load: its first 32 sends arrive together.
    built: list[str] = []
    real_recording_producer = publish.recording_producer
    real_broker_client = Publisher._broker_client

    def recording_producer(app: Any) -> Any:
        built.append("recording producer")
        return real_recording_producer(app)

    def broker_client(self: Publisher) -> Any:
        built.append("broker client")
        return real_broker_client(self)

    monkeypatch.setattr(publish, "recording_producer", recording_producer)
    monkeypatch.setattr(Publisher, "_broker_client", broker_client)
    publisher = Publisher(client_app(server.url()))
    jobs = [build_job(f"cus_burst{n:04d}", "card_B2") for n in range(32)]

    async def burst() -> list[bool]:
        try:
            return await asyncio.gather(*(publisher.send(job.stamped()) for job in jobs))
        finally:
            await publisher.close()

    assert asyncio.run(burst()) == [True] * 32  # every one sent on the event loop
    assert built == ["recording producer", "broker client"]
    assert server.client().llen(QUEUE) == 32


def next_event(events: Any) -> dict[str, Any]:
    """The body of the next message on a subscribed event channel."""
    while True:
        message = events.get_message(timeout=JOB_TIMEOUT)
        assert message is not None, "no task-sent event"
        if message["type"] == "message":
            return dict(json.loads(base64.b64decode(json.loads(message["data"])["body"])))


#: Run in a fresh process (the settings, signing included, come from its environment):
#: one job sent by the gateway's publisher, then by Celery's blocking send; prints
#: the two raw messages on the queue, their bodies as a worker decodes them, and the
#: two task-sent events, as JSON.
BOTH_SENDS = """
import asyncio, base64, json, sys
import redis
from kombu.serialization import loads, prepare_accept_content
from harness.processes import client_app
from producers.client import build_job, send_job
from producers.http.publish import Publisher

url, job_id, customer, card = sys.argv[1:5]
client = redis.Redis.from_url(url)
events = client.pubsub()
events.subscribe(sys.argv[5])
app = client_app(url)
job = build_job(customer, card, job_id=job_id, requested_at="2026-01-01T00:00:00Z")
publisher = Publisher(app)
asyncio.run(publisher.send(job))
assert publisher.is_redis and publisher._redis is not None, "not sent on the event loop"
send_job(job, app)
messages = [m.decode() for m in reversed(client.lrange("cards", 0, -1))]
sent = []
while len(sent) < 2:
    message = events.get_message(timeout=10)
    assert message is not None, "missing task-sent event"
    if message["type"] == "message":
        sent.append(message["data"].decode())
def decoded(raw):  # as a worker decodes it: a signed body is verified first
    message = json.loads(raw)
    body = base64.b64decode(message["body"])
    accept = prepare_accept_content(app.conf.accept_content)
    return loads(body, message["content-type"], message["content-encoding"], accept=accept)
bodies = [decoded(m) for m in messages]
print(json.dumps({"messages": messages, "events": sent, "bodies": bodies}))
"""

#: A stock Celery producer in an isolated interpreter: nothing from this project.
STOCK_SEND = """
import sys
from celery import Celery
app = Celery(broker=sys.argv[1], backend=sys.argv[1])
app.conf.task_default_queue = "cards"
app.send_task(
    "cards.set_default_card",
    kwargs={"userId": sys.argv[3], "default_source": sys.argv[4], "job_id": sys.argv[2],
            "requested_at": "2026-01-01T00:00:00Z"},
    task_id=sys.argv[2],
)
assert not [name for name in sys.modules if name.split(".")[0] in ("cards", "producers")]
"""


def both_sends(url: str, job_id: str, env: dict[str, str]) -> dict[str, list[Any]]:
    done = subprocess.run(
        [sys.executable, "-c", BOTH_SENDS, url, job_id, "cus_A1", "card_B2", TASK_SENT_CHANNEL],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout))


def envelope(raw: str) -> dict[str, Any]:
    """A raw message without its body and delivery tag."""
    message = json.loads(raw)
    message.pop("body")
    message["properties"].pop("delivery_tag")
    return dict(message)


def event_body(raw: str) -> dict[str, Any]:
    body = json.loads(base64.b64decode(json.loads(raw)["body"]))
    for varies in ("clock", "timestamp"):
        body.pop(varies)
    return dict(body)


@pytest.mark.parametrize("signed", [False, True], ids=["plain", "signed"])
def test_the_gateways_message_is_celerys_byte_for_byte(
    server: RedisServer, tmp_path: Path, signed: bool
) -> None:
    url = server.url()
    env = {"CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url}
    env |= make_signing_files(tmp_path) if signed else {}
    sent = both_sends(url, "same-job-1", env)
    gateway, celery = sent["messages"]
    tags = [json.loads(raw)["properties"]["delivery_tag"] for raw in (gateway, celery)]
    assert tags[0] != tags[1]
    if signed:  # each signature has a random salt (PSS): the same once verified
        assert envelope(gateway) == envelope(celery)
        assert json.loads(gateway)["content-type"] == "application/data"
    else:
        assert gateway.replace(tags[0], "TAG") == celery.replace(tags[1], "TAG")
    gateway_body, celery_body = sent["bodies"]
    assert gateway_body == celery_body
    assert gateway_body[1] == {
        "userId": "cus_A1",
        "default_source": "card_B2",
        "job_id": "same-job-1",
        "requested_at": "2026-01-01T00:00:00Z",
    }
    gateway_event, celery_event = sent["events"]
    assert event_body(gateway_event) == event_body(celery_event)
    assert envelope(gateway_event) == envelope(celery_event)


def as_the_worker_reads(raw: str) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """Headers, properties and decoded body of a raw message (a JSON task)."""
    message = json.loads(raw)
    assert message["properties"]["body_encoding"] == "base64"
    assert (message["content-type"], message["content-encoding"]) == ("application/json", "utf-8")
    body = json.loads(base64.b64decode(message["body"]))
    return message["headers"], message["properties"], body


def test_a_stock_celery_clients_message_reads_the_same_to_the_worker(
    server: RedisServer,
) -> None:
    url = server.url()
    job_id = "same-job-2"
    gateway_raw, _ = both_sends(url, job_id, {"CELERY_BROKER_URL": url})["messages"]
    done = subprocess.run(
        [str(BIN / "python"), "-I", "-c", STOCK_SEND, url, job_id, "cus_A1", "card_B2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    stock_raw = redis.Redis.from_url(url).lindex(QUEUE, 0)
    assert stock_raw is not None
    ours, stock = as_the_worker_reads(gateway_raw), as_the_worker_reads(stock_raw.decode())
    (headers, properties, body), (stock_headers, stock_properties, stock_body) = ours, stock
    assert body == stock_body  # args, kwargs and the same (empty) callbacks, chain, chord
    assert set(headers) == set(stock_headers)
    # Where they differ is who sent them and what Flower shows, not what runs.
    differ = {"origin", "argsrepr", "kwargsrepr", "ignore_result"}
    assert {k: v for k, v in headers.items() if k not in differ} == {
        k: v for k, v in stock_headers.items() if k not in differ
    }
    assert headers["kwargsrepr"] == repr({"job_id": job_id})
    for key in ("correlation_id", "delivery_mode", "delivery_info", "priority", "body_encoding"):
        assert properties[key] == stock_properties[key], key


def test_the_job_carries_its_gateway_requests_trace(server: RedisServer) -> None:
    url = server.url()
    exporter = InMemorySpanExporter()
    tracing = enable_tracing("gateway-test", Settings(tracing=True), exporter=exporter)
    assert tracing is not None
    try:
        settings = Settings(
            celery_broker_url=url, celery_result_backend=url, gateway_api_keys=KEY, tracing=True
        )
        app = create_app(settings, client_app(url))

        async def post() -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
                return await http.post(
                    "/api/cards/default",
                    json={"userId": "cus_A1", "default_source": "card_B2"},
                    headers={"Authorization": f"Bearer {KEY}"},
                )

        assert asyncio.run(post()).status_code == 202
        [request] = [
            s for s in exporter.get_finished_spans() if s.name == "POST /api/cards/default"
        ]
    finally:
        tracing.close()
    raw = redis.Redis.from_url(url).lindex(QUEUE, 0)
    assert raw is not None
    traceparent = json.loads(raw)["headers"]["traceparent"]  # W3C: 00-<trace id>-<span>-<flags>
    assert traceparent.split("-")[1] == format(request.context.trace_id, "032x")

"""One trace per job: producer → broker → worker → Stripe, and no customer data in it.

The producer is this test process, its spans in OpenTelemetry's in-memory
exporter; the worker is a real ``celery worker`` with ``CARDS_TRACING=1``
exporting over OTLP/HTTP, as in production, to a receiver on loopback here.
The producer's publish span, the worker's task span and the Stripe HTTP span
must share one trace id; nothing in any span may name the customer, the card
or an email address. A bulk batch is one trace whose rows each have their own span.
"""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cards.batches import BATCH_TASK_NAME
from cards.settings import Settings
from cards.tracing import enable_tracing
from harness.processes import RedisServer, client_app, run_worker, wait_for
from producers.client import enqueue_set_default_card, get_result
from stripe_emulator.process import EmulatorProcess
from tests.integration.conftest import worker_env

pytestmark = pytest.mark.integration

TRACING_DB = 7


class Collector:
    """An OTLP/HTTP trace receiver on loopback: every span it was sent, as dicts."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource in MessageToDict(request).get("resourceSpans", []):
                    for scope in resource.get("scopeSpans", []):
                        collector.spans.extend(scope.get("spans", []))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def attributes(span: dict[str, Any]) -> dict[str, Any]:
    """An OTLP span's attributes as ``{key: value}``."""
    return {a["key"]: next(iter(a["value"].values()), None) for a in span.get("attributes", [])}


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    receiver = Collector()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture(scope="module")
def traced_app(
    redis_server: RedisServer, emulator: EmulatorProcess, logs_dir: Path, collector: Collector
) -> Iterator[Celery]:
    env = worker_env(
        redis_server.url(TRACING_DB),
        emulator.url,
        CARDS_TRACING="1",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=collector.url,
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    with run_worker(env, logs_dir / "tracing-worker.log", name="traced"):
        yield client_app(redis_server.url(TRACING_DB))


@pytest.fixture
def producer_spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing = enable_tracing("test-producer", Settings(tracing=True), exporter=exporter)
    assert tracing is not None
    yield exporter
    tracing.close()


def test_a_job_is_one_trace_from_producer_to_stripe_without_customer_data(
    traced_app: Celery,
    collector: Collector,
    producer_spans: InMemorySpanExporter,
    emulator: EmulatorProcess,
) -> None:
    customer = emulator.admin.seed(1, cards_per_customer=2)[0]
    card = customer["cards"][1]
    job_id = enqueue_set_default_card(customer["id"], card, app=traced_app)
    assert get_result(job_id, timeout=30, app=traced_app)["status"] is True

    (publish,) = [s for s in producer_spans.get_finished_spans() if s.name.startswith("apply_")]
    trace_id = publish.context.trace_id.to_bytes(16, "big")

    def in_trace() -> list[dict[str, Any]]:
        wanted = base64.b64encode(trace_id).decode()
        return [s for s in collector.spans if s["traceId"] == wanted]

    def complete() -> bool:
        names = {s["name"] for s in in_trace()}
        return "run/cards.set_default_card" in names and "POST" in names

    wait_for(complete, 30, "the worker's task and Stripe spans at the collector")
    spans = {s["name"]: s for s in in_trace()}
    task, stripe_call = spans["run/cards.set_default_card"], spans["POST"]
    assert publish.name == "apply_async/cards.set_default_card"
    publish_id = base64.b64encode(publish.context.span_id.to_bytes(8, "big")).decode()
    assert task["parentSpanId"] == publish_id  # across the broker, in the message headers
    assert stripe_call["parentSpanId"] == task["spanId"]

    job = attributes(task)
    assert job["cards.job_id"] == job_id
    assert job["cards.outcome"] == "ok"
    assert int(job["cards.attempts"]) == 1
    call = attributes(stripe_call)
    assert call["stripe.request_id"].startswith("req_")
    url = call.get("url.full") or call.get("http.url")
    assert url is not None and "/v1/customers/cus_<redacted>" in url

    everything = repr(collector.spans) + repr(
        [(s.name, dict(s.attributes or {})) for s in producer_spans.get_finished_spans()]
    )
    email = emulator.admin.get_customer(customer["id"])["email"]
    assert email
    for personal in (customer["id"], card, *customer["cards"], email):
        assert personal not in everything


def test_each_row_of_a_bulk_batch_is_a_span_of_its_own_with_its_stripe_call(
    traced_app: Celery, collector: Collector, emulator: EmulatorProcess
) -> None:
    customers = emulator.admin.seed(3, cards_per_customer=2)
    rows = [
        {"userId": c["id"], "default_source": c["cards"][1], "job_id": f"trace-row:{uuid.uuid4()}"}
        for c in customers
    ]
    batch_id = str(uuid.uuid4())
    traced_app.send_task(BATCH_TASK_NAME, kwargs={"jobs": rows}, task_id=batch_id)
    assert get_result(batch_id, timeout=30, app=traced_app)["data"]["answered"] == 3

    def batch_trace() -> list[dict[str, Any]]:
        tasks = [
            s
            for s in collector.spans
            if s["name"] == f"run/{BATCH_TASK_NAME}"
            and attributes(s).get("celery.task_id", batch_id) == batch_id
        ]
        ids = {s["traceId"] for s in tasks}
        return [s for s in collector.spans if s["traceId"] in ids]

    def complete() -> bool:
        spans = batch_trace()
        names = [s["name"] for s in spans]
        return names.count("row/cards.set_default_card") == 3 and names.count("POST") == 3

    wait_for(complete, 30, "the batch's row and Stripe spans at the collector")
    spans = batch_trace()
    (task,) = [s for s in spans if s["name"] == f"run/{BATCH_TASK_NAME}"]
    row_spans = [s for s in spans if s["name"] == "row/cards.set_default_card"]
    assert all(s["parentSpanId"] == task["spanId"] for s in row_spans)
    by_job = {attributes(s)["cards.job_id"]: s for s in row_spans}
    assert set(by_job) == {row["job_id"] for row in rows}
    for row_span in row_spans:
        job = attributes(row_span)
        assert job["cards.outcome"] == "ok" and int(job["cards.attempts"]) == 1
        (stripe_call,) = [s for s in spans if s.get("parentSpanId") == row_span["spanId"]]
        assert stripe_call["name"] == "POST"
        assert attributes(stripe_call)["stripe.request_id"].startswith("req_")
    everything = repr(spans)
    for customer in customers:
        for personal in (customer["id"], *customer["cards"]):
            assert personal not in everything

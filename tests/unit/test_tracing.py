"""Tracing's redaction (table-tested) and the gateway's request spans (in-memory exporter)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cards.settings import Settings
from cards.tracing import REDACTED, current_tracing, enable_tracing, redact, redact_attributes
from producers.http.app import create_app
from tests.unit.test_gateway import KEY, call, settings, unreachable_app


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("/v1/customers/cus_Ab12", f"/v1/customers/cus_{REDACTED}"),
        (
            "https://api.stripe.com/v1/customers/cus_X9/sources/card_Y8?expand[]=sources",
            f"https://api.stripe.com/v1/customers/cus_{REDACTED}/sources/card_{REDACTED}"
            "?expand[]=sources",
        ),
        (
            "src_1 pm_2 ba_3 tok_4 acct_5 seti_6",
            " ".join(f"{p}_{REDACTED}" for p in ("src", "pm", "ba", "tok", "acct", "seti")),
        ),
        ("mail jane.doe+x@example.co.uk now", f"mail {REDACTED} now"),
        # What a trace is for stays: Stripe's request id, task names, job ids, hosts.
        ("req_Q1w2E3r4", "req_Q1w2E3r4"),
        ("run/cards.set_default_card", "run/cards.set_default_card"),
        ("celery@worker-1", "celery@worker-1"),
        ("m3f2:17", "m3f2:17"),
        ("discus_12", "discus_12"),
    ],
)
def test_redact(text: str, redacted: str) -> None:
    assert redact(text) == redacted


def test_redact_attributes_reaches_strings_in_sequences_only() -> None:
    given: dict[str, Any] = {"a": "cus_1", "b": ("x", "card_2"), "n": 3, "ok": True}
    assert redact_attributes(given) == {
        "a": f"cus_{REDACTED}",
        "b": ("x", f"card_{REDACTED}"),
        "n": 3,
        "ok": True,
    }
    assert redact_attributes(None) == {}


def test_off_by_default() -> None:
    assert Settings().tracing is False
    assert enable_tracing("anything", Settings()) is None
    assert current_tracing() is None


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing = enable_tracing("unit", Settings(tracing=True), exporter=exporter)
    assert tracing is not None
    yield exporter
    tracing.close()
    assert current_tracing() is None


def test_a_gateway_request_is_a_span_named_by_route_without_the_customer(
    spans: InMemorySpanExporter,
) -> None:
    app = create_app(settings(tracing=True), unreachable_app())
    customer = "cus_PersonalCustomer42"
    response = call(
        app, "GET", f"/api/cards/{customer}?wait=0", headers={"Authorization": f"Bearer {KEY}"}
    )
    assert response.status_code == 503  # nothing behind it; the span is what is tested
    assert call(app, "GET", "/healthz").status_code == 503

    finished = spans.get_finished_spans()
    server = [s for s in finished if s.name == "GET /api/cards/{customerId}"]
    assert server, [s.name for s in finished]
    seen = repr([(s.name, dict(s.attributes or {}), s.events) for s in finished])
    assert customer not in seen
    assert f"cus_{REDACTED}" in seen
    assert "/healthz" not in seen

"""OpenTelemetry tracing, off unless ``CARDS_TRACING`` is on: one trace per job.

:func:`enable_tracing` sets up this process once: a tracer provider exporting
(``OTEL_TRACES_EXPORTER``: ``otlp``, the default, or ``console``; the OTLP
exporter reads the standard ``OTEL_EXPORTER_OTLP_*`` variables) through
:class:`RedactingProcessor`, and the Celery instrumentation, which carries the
trace from the producer's publish to the worker's task in the message headers.
Spans never carry customer data: every string a span holds goes through
:func:`redact` (pure) before export. The ``tracing`` extra holds the libraries;
this module imports them only when tracing is enabled. More: docs/tracing.md.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from cards.settings import Settings, get_settings

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "REDACTED",
    "Tracing",
    "TracingUnavailable",
    "current_tracing",
    "enable_tracing",
    "redact",
    "redact_attributes",
]

#: What a redacted id or email becomes (the id's prefix stays: ``cus_<redacted>``).
REDACTED: Final = "<redacted>"
#: Customer data in a span: the ids of customers, their cards, sources, payment
#: methods, bank accounts, tokens and connected accounts, and email addresses.
#: Stripe's request ids (``req_…``) stay: they are what a trace is for.
_PERSONAL = re.compile(
    r"\b(?P<prefix>cus|card|src|pm|ba|tok|acct|seti|cs)_[A-Za-z0-9]+"
    r"|[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
)


class TracingUnavailable(RuntimeError):
    """``CARDS_TRACING`` is on but the ``tracing`` extra is not installed."""


def redact(text: str) -> str:
    """``text`` with every customer id and email address replaced. (Pure.)"""

    def replace(match: re.Match[str]) -> str:
        prefix = match.group("prefix")
        return f"{prefix}_{REDACTED}" if prefix else REDACTED

    return _PERSONAL.sub(replace, text)


def redact_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Span attributes with every string (and string in a sequence) redacted. (Pure.)"""
    clean: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if isinstance(value, str):
            clean[key] = redact(value)
        elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
            clean[key] = tuple(redact(v) if isinstance(v, str) else v for v in value)
        else:
            clean[key] = value
    return clean


def _redacting_processor(inner: SpanProcessor) -> SpanProcessor:
    from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor

    class RedactingProcessor(SpanProcessor):
        """Hands ``inner`` a copy of each ended span with its name, attributes and
        events' attributes redacted: no exporter ever sees customer data."""

        def on_start(self, span: Span, parent_context: Context | None = None) -> None:
            inner.on_start(span, parent_context)

        def on_end(self, span: ReadableSpan) -> None:
            events = [
                Event(e.name, redact_attributes(e.attributes), e.timestamp) for e in span.events
            ]
            inner.on_end(
                ReadableSpan(
                    name=redact(span.name),
                    context=span.context,
                    parent=span.parent,
                    resource=span.resource,
                    attributes=redact_attributes(span.attributes),
                    events=events,
                    links=span.links,
                    kind=span.kind,
                    status=span.status,
                    start_time=span.start_time,
                    end_time=span.end_time,
                    instrumentation_scope=span.instrumentation_scope,
                )
            )

        def shutdown(self) -> None:
            inner.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return inner.force_flush(timeout_millis)

    return RedactingProcessor()


def _exporter() -> SpanExporter:
    choice = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if choice == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if choice != "otlp":
        raise TracingUnavailable(
            f"OTEL_TRACES_EXPORTER={choice!r}: cards-worker exports with 'otlp' or 'console'"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


@dataclass(frozen=True)
class Tracing:
    """This process's tracing: its provider, for the instrumentations to use."""

    provider: TracerProvider
    service: str

    def close(self) -> None:
        """Stop the instrumentations and flush the spans (tests; a process just exits)."""
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        global _tracing
        CeleryInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
        self.provider.shutdown()
        with _lock:
            _tracing = None


_lock = threading.Lock()
_tracing: Tracing | None = None


def current_tracing() -> Tracing | None:
    """This process's tracing, if :func:`enable_tracing` turned it on."""
    return _tracing


def enable_tracing(
    service: str, settings: Settings | None = None, *, exporter: SpanExporter | None = None
) -> Tracing | None:
    """Turn tracing on in this process if ``CARDS_TRACING`` is on (once; later calls
    return the first call's). ``service`` names the process unless ``OTEL_SERVICE_NAME``
    does; ``exporter`` (tests) replaces the configured one, exporting each span at its end.
    :class:`TracingUnavailable` if the ``tracing`` extra is missing."""
    global _tracing
    settings = settings if settings is not None else get_settings()
    if not settings.tracing:
        return None
    with _lock:
        if _tracing is not None:
            return _tracing
        try:
            from opentelemetry import trace
            from opentelemetry.instrumentation.celery import CeleryInstrumentor
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        except ImportError:
            raise TracingUnavailable(
                "CARDS_TRACING is on but the tracing libraries are not installed: "
                "pip install 'cards-worker[tracing]'"
            ) from None
        name = os.environ.get("OTEL_SERVICE_NAME") or service
        provider = TracerProvider(resource=Resource.create({"service.name": name}))
        inner = (
            SimpleSpanProcessor(exporter)
            if exporter is not None
            else BatchSpanProcessor(_exporter())
        )
        provider.add_span_processor(_redacting_processor(inner))
        trace.set_tracer_provider(provider)
        CeleryInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
        _tracing = Tracing(provider, name)
        return _tracing

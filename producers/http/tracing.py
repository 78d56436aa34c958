"""Tracing in the gateway: each request a server span, parent of the job it sends.

:func:`trace_gateway` turns tracing on (:func:`cards.tracing.enable_tracing`)
and instruments the app with the FastAPI instrumentation, spans named by route
template; the shared processor redacts customer ids from every attribute (the
URL path of ``GET /api/cards/{customerId}`` holds one). Off unless
``CARDS_TRACING`` is on; ``/healthz`` is never traced.
"""

from __future__ import annotations

from fastapi import FastAPI

from cards.settings import Settings
from cards.tracing import enable_tracing

__all__ = ["trace_gateway"]


def trace_gateway(app: FastAPI, settings: Settings) -> None:
    """Trace ``app``'s requests if ``CARDS_TRACING`` is on."""
    tracing = enable_tracing("cards-gateway", settings)
    if tracing is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=tracing.provider, excluded_urls="healthz"
    )

"""Tracing in the worker: each process that runs jobs turns it on as it starts.

A prefork pool's child turns it on at ``worker_process_init`` (an exporter's
thread must not cross the fork), other pools in the main process when the
worker is ready. Besides :func:`cards.tracing.enable_tracing`'s Celery spans,
every Stripe call is an HTTP span (httpx instrumentation) carrying Stripe's
``request_id``; the job's own attributes come from the pipeline's tracing step
(:mod:`worker.middleware.tracing`), on the task's span or, for a bulk batch's row,
on the row's own :func:`job_span`. Off unless ``CARDS_TRACING`` is on.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Final

from celery import signals
from celery.concurrency.prefork import TaskPool as PreforkPool

from cards.tracing import current_tracing, enable_tracing

__all__ = ["REQUEST_ID_ATTRIBUTE", "job_span", "trace_worker"]

logger = logging.getLogger(__name__)

#: The Stripe HTTP span's attribute holding Stripe's ``Request-Id``.
REQUEST_ID_ATTRIBUTE: Final = "stripe.request_id"


def _stripe_request_id(span: Any, request: Any, response: Any) -> None:
    headers = response.headers
    request_id = headers.get("request-id") if headers is not None else None
    if request_id:
        span.set_attribute(REQUEST_ID_ATTRIBUTE, str(request_id))


def job_span(name: str) -> AbstractContextManager[Any]:
    """A span of its own for a job run inside another task (a bulk batch's row), current
    while the job runs, so the job's attributes and Stripe calls land on it; a no-op
    context when tracing is off in this process."""
    tracing = current_tracing()
    if tracing is None:
        return nullcontext()
    return tracing.provider.get_tracer("cards.worker").start_as_current_span(name)


def trace_worker() -> None:
    """Turn tracing on in this process, Stripe's HTTP calls included, if it is enabled."""
    tracing = enable_tracing("cards-worker")
    if tracing is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    instrumentor = HTTPXClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=tracing.provider, response_hook=_stripe_request_id)


@signals.worker_process_init.connect
def _trace_pool_process(**_: Any) -> None:
    try:
        trace_worker()
    except Exception:  # a job must not fail for want of tracing
        logger.exception("tracing could not start in this pool process")


@signals.worker_ready.connect
def _trace_main_process(sender: Any = None, **_: Any) -> None:
    if not isinstance(getattr(sender, "pool", None), PreforkPool):
        _trace_pool_process()

"""Prometheus metrics from the workers, correct under the prefork pool.

Each pool process counts in its own memory-mapped files under
``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode; a fresh
temporary directory per worker when unset); the main process serves their sum
on ``/metrics`` at ``CARDS_METRICS_ADDRESS``:``CARDS_METRICS_PORT`` (0, the
default, serves nothing). The directory is chosen when the worker starts,
before the pool forks and before any metric value exists.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any, Final

from celery import signals
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
    values,
)

from cards.settings import get_settings

__all__ = [
    "BREAKER_OPEN",
    "CALLBACK_DELIVERIES",
    "JOB_OUTCOMES",
    "JOB_RETRIES",
    "RATE_LIMITER_WAIT",
    "STRIPE_CALL_SECONDS",
]

logger = logging.getLogger(__name__)

#: Stripe answers in tens to hundreds of ms; timeouts are 10 s by default.
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

STRIPE_CALL_SECONDS = Histogram(
    "cards_stripe_call_seconds",
    "Latency of Stripe API calls, by operation and outcome.",
    ["operation", "outcome"],
    buckets=LATENCY_BUCKETS,
)
JOB_OUTCOMES = Counter(
    "cards_job_outcomes_total",
    "Finished jobs, by task and outcome (ok, or the failure kind).",
    ["task", "outcome"],
)
JOB_RETRIES = Counter(
    "cards_job_retries_total",
    "Job retries scheduled, by task and reason.",
    ["task", "reason"],
)
RATE_LIMITER_WAIT = Histogram(
    "cards_rate_limiter_wait_seconds",
    "Time a job waited in its worker slot for a token of the shared Stripe rate limit.",
    ["queue"],
    buckets=(0.0, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BREAKER_OPEN = Gauge(
    "cards_stripe_breaker_open",
    "1 while the worker takes no jobs because it cannot work with Stripe, by cause.",
    ["cause"],
    multiprocess_mode="livemax",
)
CALLBACK_DELIVERIES = Counter(
    "cards_callback_deliveries_total",
    "Callback delivery attempts, by result (delivered, retry, failed).",
    ["result"],
)


def _count_in_files() -> None:
    """Make every metric value created from now on file-backed, in a directory
    of this worker's own (fresh, so no stale counts; unless the operator gave one)."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="cards-metrics-")
    # prometheus-client picks in-memory or file-backed values when it is first
    # imported (the celery command imports it early, through Flower's plugin).
    # Every metric here has labels, so its values are only created after the
    # pool forks, by then with this choice.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


@signals.worker_init.connect
def _serve_metrics(**_: Any) -> None:
    settings = get_settings()
    if not settings.metrics_port:
        return
    _count_in_files()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    try:
        start_http_server(settings.metrics_port, settings.metrics_address, registry=registry)
    except OSError as exc:
        # Metrics are an aid, not a reason to refuse jobs.
        logger.error("metrics: cannot serve on port %s: %s", settings.metrics_port, exc)
        return
    logger.info(
        "metrics: serving /metrics on %s:%s", settings.metrics_address, settings.metrics_port
    )


@signals.worker_process_shutdown.connect
def _forget_dead_process(pid: int | None = None, **_: Any) -> None:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]

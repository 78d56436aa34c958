"""Prometheus metrics from the workers, correct under the prefork pool.

Each pool process counts in its own memory-mapped files under
``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode; a fresh
temporary directory per worker when unset); the main process serves their sum
on ``/metrics`` (:mod:`worker.status_http`). The directory is chosen when the
worker starts, before the pool forks and before any metric value exists.
Every label here takes values from a fixed set (task names, outcome kinds,
operations, queues, causes): never a customer, job or migration id.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Final

from celery import signals
from prometheus_client import Counter, Gauge, Histogram, multiprocess, values

__all__ = [
    "BREAKER_OPEN",
    "CALLBACK_DELIVERIES",
    "JOB_OUTCOMES",
    "JOB_RETRIES",
    "RATE_LIMITER_WAIT",
    "STRIPE_CALL_SECONDS",
    "count_in_files",
]

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
    "Finished jobs, by task, queue and outcome (ok, or the failure kind).",
    ["task", "queue", "outcome"],
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


def count_in_files() -> None:
    """Make every metric value created from now on file-backed, in a directory
    of this worker's own (fresh, so no stale counts; unless the operator gave one)."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="cards-metrics-")
    # prometheus-client picks in-memory or file-backed values when it is first
    # imported (the celery command imports it early, through Flower's plugin).
    # Every metric here has labels, so its values are only created after the
    # pool forks, by then with this choice.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


@signals.worker_process_shutdown.connect
def _forget_dead_process(pid: int | None = None, **_: Any) -> None:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]

"""The worker's Celery application: ``celery -A worker worker`` finds it as ``worker.app``."""

from __future__ import annotations

import logging

from celery.app import trace

import worker.pool  # sizes a prefork pool started without -c
import worker.siblings  # one threads-pool worker process per core (after worker.pool)
import worker.status_http  # serves /metrics, /livez, /readyz when the worker starts
import worker.tracing  # noqa: F401 - traces jobs when CARDS_TRACING is on
from cards.messaging import celery_app
from worker.breaker import BreakerStep
from worker.probes import HealthStep
from worker.security import assert_safe_serialization

__all__ = ["app"]

# Celery's success line logs the task's return value, here a customer object
# with email, name and phone. Job outcomes are logged by worker.tasks instead.
trace.LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"

# Each job logs one line of its own (worker.middleware.outcomes). Celery's "Received
# task" line and the SDK's and httpx's per-request INFO lines would triple the log
# and, with a bulk batch's row threads, queue every Stripe call on the log handler's
# lock. Their warnings and errors still reach the log; Celery's success and retry
# lines stay.
for _library in ("celery.worker.strategy", "stripe", "httpx", "httpcore"):
    logging.getLogger(_library).setLevel(logging.WARNING)

app = celery_app(
    "cards-worker",
    task_cls="worker.malformed:GuardedTask",
    include=[
        "worker.tasks",
        "worker.batches",
        "worker.callbacks",
    ],
)
assert_safe_serialization(app.conf)
app.events.dispatcher_cls = "worker.events:BatchingDispatcher"
app.steps["consumer"].add(BreakerStep)
app.steps["consumer"].add(HealthStep)

"""The worker's Celery application: ``celery -A worker worker`` finds it as ``worker.app``."""

from __future__ import annotations

from celery.app import trace

import worker.metrics  # noqa: F401 - serves /metrics once the worker starts
from cards.messaging import celery_app
from worker.security import assert_safe_serialization

__all__ = ["app"]

# Celery's success line logs the task's return value, here a customer object
# with email, name and phone. Job outcomes are logged by worker.tasks instead.
trace.LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"

app = celery_app(
    "cards-worker",
    task_cls="worker.strategy:GuardedTask",
    include=["worker.tasks", "worker.companion", "worker.callbacks", "worker.checks"],
)
assert_safe_serialization(app.conf)

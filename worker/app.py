"""The worker's Celery application: ``celery -A worker worker`` finds it as ``worker.app``."""

from __future__ import annotations

from celery import Celery
from celery.app import trace

import worker.metrics  # noqa: F401 - serves /metrics once the worker starts

__all__ = ["app"]

# Celery's success line logs the task's return value, here a customer object
# with email, name and phone. Job outcomes are logged by worker.tasks instead.
trace.LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"

app = Celery("cards-worker", include=["worker.tasks", "worker.companion", "worker.callbacks"])
app.config_from_object("celeryconfig")

"""The worker's Celery application: ``celery -A worker worker`` finds it as ``worker.app``."""

from __future__ import annotations

from celery import Celery

__all__ = ["app"]

app = Celery("cards-worker", include=["worker.tasks"])
app.config_from_object("celeryconfig")

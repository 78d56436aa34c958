"""Notify: a job sent with a ``callback_url`` has its final answer delivered there.

This step queues the ``cards.deliver_callback`` task (:mod:`worker.callbacks`),
which signs and POSTs it, and marks the delivery pending. It never raises: the
job's result stands whatever happens to its callback.
"""

from __future__ import annotations

import logging
import time

import redis

from cards.deliveries import (
    CALLBACK_TASK_NAME,
    CallbackStatus,
    DeliveryState,
    DeliveryStore,
    callback_task_id,
)
from cards.redaction import event_reprs
from cards.settings import get_settings
from worker.app import app
from worker.pipeline import Answer, JobCall, Step

__all__ = ["Notify"]

logger = logging.getLogger(__name__)


class Notify(Step):
    def __init__(self, deliveries: DeliveryStore) -> None:
        self.deliveries = deliveries

    def after_job(self, call: JobCall, answer: Answer) -> None:
        url = getattr(call.job, "callback_url", None)
        if url is None:
            return
        now = time.time()
        try:
            self.deliveries.mark_pending(call.job_id, now)
        except redis.RedisError:
            logger.warning("job %s: could not record its callback as pending", call.job_id)
        try:
            app.send_task(
                CALLBACK_TASK_NAME,
                kwargs={
                    "job_id": call.job_id,
                    "callback_url": str(url),
                    "envelope": dict(answer),
                    "finished_at": now,
                },
                task_id=callback_task_id(call.job_id),
                queue=get_settings().queue,
                **event_reprs(call.job_id),
            )
        except Exception:
            logger.exception("job %s: could not queue its callback", call.job_id)
            self._unqueued(call.job_id, now)

    def _unqueued(self, job_id: str, now: float) -> None:
        status: CallbackStatus = {
            "state": DeliveryState.FAILED.value,
            "attempts": 0,
            "last_error": "the callback could not be queued",
            "last_status": None,
            "delivered_at": None,
            "updated_at": now,
        }
        try:
            self.deliveries.record(job_id, status)
        except redis.RedisError:
            logger.warning("job %s: could not record its callback delivery", job_id)

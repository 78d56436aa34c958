"""Celery request classes that keep customer data out of task events (Flower) and the log.

Celery builds each received message into a :class:`celery.worker.request.Request`
(a task's ``Request`` attribute picks the class). Its ``argsrepr`` and
``kwargsrepr`` feed the ``task-received`` event and the "Received task" log
line, and its ``send_event`` emits ``task-succeeded`` with a repr of the return
value. See :mod:`cards.redaction` for what is shown instead, and why.
"""

from __future__ import annotations

from typing import Any

from celery.worker.request import Request

from cards.jobs import check_job_id
from cards.redaction import batch_reprs, calls_for_a_probe, finished_event
from worker.breaker import BREAKER

__all__ = ["BatchRequest", "EnvelopeRequest", "JobIdRequest"]


class JobIdRequest(Request):
    """Events and log lines name the job, never the arguments."""

    def _job_id(self) -> str:
        kwargs = self.kwargs
        job_id = kwargs.get("job_id") if isinstance(kwargs, dict) else None
        if isinstance(job_id, str):
            try:
                return check_job_id(job_id)
            except ValueError:
                pass
        return str(self.id)

    @property
    def argsrepr(self) -> str:
        return "()"

    @property
    def kwargsrepr(self) -> str:
        return repr({"job_id": self._job_id()})


class EnvelopeRequest(JobIdRequest):
    """…and a finished job's event shows ``{status, message}``, not the customer; a job
    that ended ``status: false`` is reported as ``task-failed`` (Flower's FAILURE)."""

    def send_event(self, type: str, **fields: Any) -> None:
        if type == "task-succeeded" and "result" in fields:
            type, fields = finished_event(fields)
        if calls_for_a_probe(type, fields):
            BREAKER.nudge()
        super().send_event(type, **fields)


class BatchRequest(EnvelopeRequest):
    """A bulk batch's events name its migration and its number of rows."""

    @property
    def kwargsrepr(self) -> str:
        kwargs = self.kwargs
        if not isinstance(kwargs, dict):
            return super().kwargsrepr
        migration_id, rows = kwargs.get("migration_id"), kwargs.get("jobs")
        if not isinstance(migration_id, str) or not isinstance(rows, list):
            return super().kwargsrepr
        try:
            check_job_id(migration_id)
        except ValueError:
            return super().kwargsrepr
        return str(batch_reprs(str(self.id), migration_id, len(rows))["kwargsrepr"])

"""How every job task runs: validate, attempt, retry or answer, record the outcome.

``cards.set_default_card``, ``cards.assign_card`` and ``cards.list_cards`` share
this flow and differ only in their contract (``validate``), their attempt
(``attempt``) and what happens to a final answer (``finish``). Every task
therefore always ends in state SUCCESS with an envelope, logs one JSON line per
finished job and counts it in the metrics, in the same way.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import celery

from cards.envelope import Envelope, ErrorKind, failure
from cards.jobs import InvalidJob
from cards.redaction import event_reprs
from cards.settings import get_settings
from worker.metrics import JOB_OUTCOMES, JOB_RETRIES
from worker.runner import RetryLater

__all__ = ["Delivery", "execute"]

logger = logging.getLogger(__name__)
outcome_logger = logging.getLogger("cards.outcome")


@dataclass(frozen=True)
class Delivery:
    """This delivery of a job: its first (never retried), and the queue it came from."""

    first: bool
    queue: str


class Job(Protocol):
    @property
    def job_id(self) -> str | None: ...

    @property
    def userId(self) -> str: ...


JobT = TypeVar("JobT", bound=Job)
ResultT = TypeVar("ResultT", bound=Mapping[str, Any])


def _record_outcome(
    task: str,
    job_id: str,
    customer: str | None,
    answer: Mapping[str, Any],
    attempts: int,
    started: float,
) -> None:
    """One JSON log line and one metric per finished job; no personal data, no secret."""
    data = answer["data"] if isinstance(answer["data"], dict) else {}
    outcome = "ok" if answer["status"] else str(data.get("kind", "failed"))
    JOB_OUTCOMES.labels(task, outcome).inc()
    outcome_logger.info(
        json.dumps(
            {
                "event": "job_finished",
                "task": task,
                "job_id": job_id,
                "customer": customer,
                "outcome": outcome,
                "attempts": attempts,
                "latency_ms": round((time.monotonic() - started) * 1000, 1),
            }
        )
    )


def _delivery(task: celery.Task[Any, Any]) -> Delivery:
    info = task.request.delivery_info or {}
    queue = info.get("routing_key") or get_settings().queue
    return Delivery(first=not task.request.retries, queue=str(queue))


def execute(
    task: celery.Task[Any, Any],
    args: tuple[Any, ...],
    fields: dict[str, Any],
    validate: Callable[[object], JobT],
    attempt: Callable[[JobT, str, Delivery], ResultT | Envelope | RetryLater],
    finish: Callable[[JobT, str, ResultT | Envelope], None] | None = None,
) -> ResultT | Envelope:
    """Run one delivery of a job task.

    ``attempt(job, job_id, delivery)`` makes one attempt; ``finish(job,
    job_id, answer)`` acts on a final answer (never on a retry, never for a
    job that failed validation, whose fields cannot be trusted).
    """
    started = time.monotonic()
    task_name = str(task.name)
    job_id = str(task.request.id)
    customer: str | None = None
    answer: ResultT | Envelope
    if args:
        answer = failure(
            "invalid job: send the fields as keyword arguments (kwargs), not positional args",
            ErrorKind.INVALID_JOB,
        )
    else:
        try:
            job = validate(fields)
        except InvalidJob as exc:
            answer = failure(str(exc), ErrorKind.INVALID_JOB, param=exc.fields[0])
        else:
            job_id = job.job_id or job_id
            customer = job.userId
            outcome: ResultT | Envelope | RetryLater
            try:
                outcome = attempt(job, job_id, _delivery(task))
            except Exception:
                # A bug, not a Stripe answer: report it once instead of retrying blindly.
                logger.exception("job %s: unexpected error", job_id)
                outcome = failure(
                    f"internal error in the worker; job {job_id} was not completed",
                    ErrorKind.INTERNAL,
                )
            if isinstance(outcome, RetryLater):
                JOB_RETRIES.labels(task_name, outcome.reason).inc()
                raise task.retry(
                    countdown=outcome.countdown, max_retries=None, **event_reprs(job_id)
                )
            answer = outcome
            if finish is not None:
                finish(job, job_id, answer)
    error = answer["data"] if not answer["status"] and isinstance(answer["data"], dict) else None
    attempts = int(error["attempts"]) if error and "attempts" in error else task.request.retries + 1
    _record_outcome(task_name, job_id, customer, answer, attempts, started)
    return answer

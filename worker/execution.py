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
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import celery

from cards.envelope import Envelope, ErrorKind, RetryCause, failure
from cards.jobs import InvalidJob, check_requested_at
from cards.redaction import event_reprs
from cards.settings import get_settings
from worker.metrics import JOB_OUTCOMES, JOB_RETRIES
from worker.runner import RetryLater

__all__ = ["Delivery", "delivery_of", "execute", "run_job"]

logger = logging.getLogger(__name__)
outcome_logger = logging.getLogger("cards.outcome")


@dataclass(frozen=True)
class Delivery:
    """This delivery of a job: its first (never retried), the queue it came from, and
    how many deliveries it has had (1 for the first)."""

    first: bool
    queue: str
    number: int = 1


class Job(Protocol):
    @property
    def job_id(self) -> str | None: ...

    @property
    def requested_at(self) -> datetime | None: ...

    @property
    def userId(self) -> str: ...


JobT = TypeVar("JobT", bound=Job)
ResultT = TypeVar("ResultT", bound=Mapping[str, Any])


def _record_outcome(
    task: str,
    job_id: str,
    customer: str | None,
    answer: Mapping[str, Any],
    delivery_number: int,
    started: float,
) -> None:
    """One JSON log line and one metric per finished job; no personal data, no secret."""
    data = answer["data"] if isinstance(answer["data"], dict) else {}
    error = data if not answer["status"] else None
    attempts = int(error["attempts"]) if error and "attempts" in error else delivery_number
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


def delivery_of(task: celery.Task[Any, Any]) -> Delivery:
    info = task.request.delivery_info or {}
    queue = info.get("routing_key") or get_settings().queue
    return Delivery(
        first=not task.request.retries, queue=str(queue), number=task.request.retries + 1
    )


def _from_the_future(job: Job) -> InvalidJob | None:
    """Refuse a requested_at beyond the clock skew: as the newest request, it would
    supersede every later request for its customer. (Too old is the runner's: stale.)"""
    if job.requested_at is None:
        return None
    try:
        check_requested_at(
            job.requested_at,
            datetime.now(UTC),
            max_age_seconds=float("inf"),
            max_skew_seconds=get_settings().max_clock_skew_seconds,
        )
    except ValueError as exc:
        return InvalidJob([str(exc)], ["requested_at"])
    return None


def run_job(
    task_name: str,
    job_id: str,
    fields: object,
    validate: Callable[[object], JobT],
    attempt: Callable[[JobT, str, Delivery], ResultT | Envelope | RetryLater],
    delivery: Delivery,
    finish: Callable[[JobT, str, ResultT | Envelope], None] | None = None,
) -> ResultT | Envelope | RetryLater:
    """Validate one job and make one attempt; a final answer is finished and recorded.

    ``attempt(job, job_id, delivery)`` makes one attempt; ``finish(job,
    job_id, answer)`` acts on a final answer (never on a retry, never for a
    job that failed validation, whose fields cannot be trusted). ``job_id``
    is the message's; a job's own ``job_id`` field wins over it.
    """
    started = time.monotonic()
    customer: str | None = None
    outcome: ResultT | Envelope | RetryLater
    try:
        job = validate(fields)
        refused = _from_the_future(job)
        if refused is not None:
            raise refused
    except InvalidJob as exc:
        outcome = failure(str(exc), ErrorKind.INVALID_JOB, param=exc.fields[0])
    else:
        job_id = job.job_id or job_id
        customer = job.userId
        try:
            outcome = attempt(job, job_id, delivery)
        except Exception:
            # A bug, not a Stripe answer: report it once instead of retrying blindly.
            logger.exception("job %s: unexpected error", job_id)
            outcome = failure(
                f"internal error in the worker; job {job_id} was not completed",
                ErrorKind.INTERNAL,
            )
        if isinstance(outcome, RetryLater):
            JOB_RETRIES.labels(task_name, outcome.reason).inc()
            return outcome
        if finish is not None:
            finish(job, job_id, outcome)
    _record_outcome(task_name, job_id, customer, outcome, delivery.number, started)
    return outcome


def execute(
    task: celery.Task[Any, Any],
    args: tuple[Any, ...],
    fields: dict[str, Any],
    validate: Callable[[object], JobT],
    attempt: Callable[[JobT, str, Delivery], ResultT | Envelope | RetryLater],
    finish: Callable[[JobT, str, ResultT | Envelope], None] | None = None,
) -> ResultT | Envelope:
    """Run one delivery of a job task (see :func:`run_job`); a retry is Celery's."""
    task_name = str(task.name)
    job_id = str(task.request.id)
    if args:
        answer: ResultT | Envelope = failure(
            "invalid job: send the fields as keyword arguments (kwargs), not positional args",
            ErrorKind.INVALID_JOB,
        )
        _record_outcome(task_name, job_id, None, answer, 1, time.monotonic())
        return answer
    outcome = run_job(task_name, job_id, fields, validate, attempt, delivery_of(task), finish)
    if isinstance(outcome, RetryLater):
        own_id = fields.get("job_id")
        raise task.retry(
            countdown=outcome.countdown,
            max_retries=None,
            # Celery logs it ("retry: Retry in 2s: RetryCause('connection: …')") and stores
            # it as the retrying job's info, which `cards result` prints.
            exc=RetryCause(f"{outcome.reason}: {outcome.cause or 'waiting'}"),
            **event_reprs(own_id if isinstance(own_id, str) else job_id),
        )
    return outcome

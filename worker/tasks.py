"""The ``cards.set_default_card`` Celery task: message in, envelope out.

Any Celery client may send it by name with the seed API's body as keyword
arguments::

    app.send_task("cards.set_default_card",
                  kwargs={"userId": "cus_…", "default_source": "card_…"})

The task always ends in state SUCCESS with an envelope (see
:mod:`cards.envelope`): bad input, Stripe refusals and exhausted retries are
answers, not task failures, so consumers read one shape and nothing is retried
that cannot succeed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import celery
from celery import signals

from cards.envelope import Envelope, ErrorKind, failure
from cards.jobs import TASK_NAME, InvalidJob, validate_job
from cards.settings import get_settings
from worker.app import app
from worker.gateway import StripeGateway
from worker.jobstate import JobStateStore
from worker.retries import RetryPolicy
from worker.runner import RetryLater, SetDefaultCardRunner

__all__ = ["set_default_card"]

logger = logging.getLogger(__name__)
outcome_logger = logging.getLogger("cards.outcome")

_runner: tuple[int, SetDefaultCardRunner] | None = None


def runner() -> SetDefaultCardRunner:
    """This process's runner, built after fork: sockets must not cross a fork."""
    global _runner
    pid = os.getpid()
    if _runner is None or _runner[0] != pid:
        settings = get_settings()
        _runner = (
            pid,
            SetDefaultCardRunner(
                gateway=StripeGateway.from_settings(settings),
                store=JobStateStore.from_url(settings.job_state_url),
                policy=RetryPolicy.from_settings(settings),
            ),
        )
    return _runner[1]


@signals.worker_ready.connect
def _warn_if_unconfigured(**_: Any) -> None:
    if get_settings().stripe_api_key is None:
        logger.critical(
            "STRIPE_API_KEY is not set: every job will fail with 'worker is misconfigured'"
        )


def _log_outcome(job_id: str, user_id: object, envelope: Envelope, started: float) -> None:
    data = envelope["data"] or {}
    outcome = "ok" if envelope["status"] else str(data.get("kind", "failed"))
    customer = user_id if isinstance(user_id, str) and len(user_id) <= 255 else None
    outcome_logger.info(
        json.dumps(
            {
                "event": "job_finished",
                "job_id": job_id,
                "customer": customer,
                "outcome": outcome,
                "attempts": data.get("attempts", None) if not envelope["status"] else None,
                "latency_ms": round((time.monotonic() - started) * 1000, 1),
            }
        )
    )


@app.task(name=TASK_NAME, bind=True, max_retries=None)
def set_default_card(self: celery.Task[Any, Envelope], *args: Any, **fields: Any) -> Envelope:
    started = time.monotonic()
    job_id = str(self.request.id)
    envelope: Envelope
    if args:
        envelope = failure(
            "invalid job: send the fields as keyword arguments (kwargs), not positional args",
            ErrorKind.INVALID_JOB,
        )
    else:
        try:
            job = validate_job(fields)
        except InvalidJob as exc:
            envelope = failure(str(exc), ErrorKind.INVALID_JOB, param=exc.fields[0])
        else:
            job_id = job.job_id or job_id
            try:
                outcome = runner().run(job, job_id, first_delivery=not self.request.retries)
            except Exception:
                # A bug, not a Stripe answer: report it once instead of retrying blindly.
                logger.exception("job %s: unexpected error", job_id)
                outcome = failure(
                    f"internal error in the worker; job {job_id} was not completed",
                    ErrorKind.INTERNAL,
                )
            if isinstance(outcome, RetryLater):
                raise self.retry(countdown=outcome.countdown, max_retries=None)
            envelope = outcome
    _log_outcome(job_id, fields.get("userId"), envelope, started)
    return envelope

"""The ``cards.deliver_callback`` task: POST a finished job's envelope to its ``callback_url``.

Queued by :class:`worker.middleware.notify.Notify` once a job's answer is
final, so a slow or refusing receiver only delays its callback: Stripe is never
called again and the job's result never changes. At least once (receivers drop
duplicates by ``webhook-id``, the job id); each attempt signed afresh
(:mod:`cards.signatures`), sent through :mod:`worker.webhook`, judged by
:mod:`worker.callback_policy`, recorded in :mod:`cards.deliveries`. Without a
signing secret nothing is sent and the record says ``misconfigured``.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any, Final, TypedDict

import celery
import redis

from cards.deliveries import (
    CALLBACK_TASK_NAME,
    CallbackStatus,
    DeliveryState,
    callback_body,
)
from cards.redaction import event_reprs
from cards.settings import get_settings
from cards.signatures import sign
from worker import wiring
from worker.app import app
from worker.callback_policy import AttemptOutcome, Decision, callback_retry_policy, decide
from worker.metrics import CALLBACK_DELIVERIES
from worker.task_requests import JobIdRequest

__all__ = ["CALLBACK_TASK_NAME", "DeliveryResult", "deliver_callback"]

MISCONFIGURED: Final = "misconfigured: CARDS_CALLBACK_SECRETS is not set; nothing was sent"

logger = logging.getLogger(__name__)
outcome_logger = logging.getLogger("cards.outcome")


class DeliveryResult(TypedDict):
    job_id: str
    delivered: bool
    attempts: int
    last_error: str | None


def _record(job_id: str, status: CallbackStatus) -> None:
    try:
        wiring.deliveries().record(job_id, status)
    except redis.RedisError:
        # The delivery itself happened (or not) regardless; only its record is missing.
        logger.warning("job %s: could not record its callback delivery", job_id)


def _finish(
    job_id: str, decision: Decision, attempts: int, outcome: AttemptOutcome, now: float
) -> DeliveryResult:
    delivered = decision.state is DeliveryState.DELIVERED
    pending = decision.state is DeliveryState.PENDING
    CALLBACK_DELIVERIES.labels("retry" if pending else decision.state.value).inc()
    _record(
        job_id,
        {
            "state": decision.state.value,
            "attempts": attempts,
            "last_error": decision.error,
            "last_status": outcome.status,
            "delivered_at": now if delivered else None,
            "updated_at": now,
        },
    )
    outcome_logger.info(
        json.dumps(
            {
                "event": "callback_attempt",
                "job_id": job_id,
                "attempt": attempts,
                "state": decision.state.value,
                "http_status": outcome.status,
                "error": decision.error,
                "retry_in": decision.countdown,
            }
        )
    )
    return {
        "job_id": job_id,
        "delivered": delivered,
        "attempts": attempts,
        "last_error": decision.error,
    }


@app.task(name=CALLBACK_TASK_NAME, bind=True, max_retries=None, Request=JobIdRequest)
def deliver_callback(
    self: celery.Task[Any, DeliveryResult],
    job_id: str,
    callback_url: str,
    envelope: dict[str, Any],
    finished_at: float,
) -> DeliveryResult:
    settings = get_settings()
    attempt = self.request.retries + 1
    secrets = settings.callback_secret_values
    if not secrets:
        logger.error("job %s: callback not sent: CARDS_CALLBACK_SECRETS is not set", job_id)
        return _finish(
            job_id,
            Decision(DeliveryState.FAILED, error=MISCONFIGURED),
            0,
            AttemptOutcome(),
            time.time(),
        )
    try:
        body = callback_body(job_id, envelope)
        headers = {
            "content-type": "application/json",
            **sign(job_id, datetime.now(UTC), body, secrets),
        }
        outcome = wiring.callback_sender().post(callback_url, body.encode(), headers)
    except Exception:
        # A bug, not the receiver's answer: report it once instead of looping.
        logger.exception("job %s: unexpected error delivering its callback", job_id)
        decision = Decision(DeliveryState.FAILED, error="internal error in the worker")
        return _finish(job_id, decision, attempt, AttemptOutcome(), time.time())
    policy = callback_retry_policy(settings)
    now = time.time()
    decision = decide(outcome, attempt, finished_at, now, policy, policy.countdown(attempt))
    result = _finish(job_id, decision, attempt, outcome, now)
    if decision.state is DeliveryState.PENDING:
        raise self.retry(countdown=decision.countdown, max_retries=None, **event_reprs(job_id))
    return result

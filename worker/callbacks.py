"""The ``cards.deliver_callback`` task: POST a finished job's envelope to its ``callback_url``.

``cards.set_default_card`` queues it once the job's envelope is final (see
:func:`enqueue_delivery`). It is a task of its own so that a receiver that is
down, slow or refusing only delays its callback: the Stripe call is never
made again and the job's result never changes. Deliveries are at least once
(a worker that dies mid-POST delivers again); receivers drop duplicates by
``webhook-id``, the job id.

Each attempt is signed afresh (:mod:`cards.signatures`), sent through the
SSRF-safe edge (:mod:`worker.webhook`), judged by the pure
:func:`worker.callback_policy.decide` and recorded in Redis
(:mod:`cards.deliveries`). The task's own result, which Flower shows, is
``{job_id, delivered, attempts, last_error}``: no customer data.

Without a signing secret (``CARDS_CALLBACK_SECRETS``) nothing is sent: the
delivery is recorded as failed with ``last_error`` starting ``misconfigured:``
and 0 attempts, and logged as an error. An unsigned callback would be
unverifiable, and a receiver that accepts one is a receiver anyone can fool.
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
    CallbackStatus,
    DeliveryState,
    DeliveryStore,
    callback_body,
    callback_task_id,
)
from cards.envelope import Envelope
from cards.redaction import event_reprs
from cards.settings import get_settings
from cards.signatures import sign
from worker.app import app
from worker.callback_policy import AttemptOutcome, Decision, callback_retry_policy, decide
from worker.metrics import CALLBACK_DELIVERIES
from worker.process_local import per_process
from worker.task_requests import JobIdRequest
from worker.webhook import CallbackSender

__all__ = ["CALLBACK_TASK_NAME", "DeliveryResult", "deliver_callback", "enqueue_delivery"]

CALLBACK_TASK_NAME: Final = "cards.deliver_callback"
MISCONFIGURED: Final = "misconfigured: CARDS_CALLBACK_SECRETS is not set; nothing was sent"

logger = logging.getLogger(__name__)
outcome_logger = logging.getLogger("cards.outcome")


class DeliveryResult(TypedDict):
    job_id: str
    delivered: bool
    attempts: int
    last_error: str | None


@per_process
def sender() -> CallbackSender:
    return CallbackSender(get_settings().callback_allowlist)


@per_process
def deliveries() -> DeliveryStore:
    settings = get_settings()
    return DeliveryStore.from_url(settings.job_state_url, settings.result_expires_seconds)


def _record(job_id: str, status: CallbackStatus) -> None:
    try:
        deliveries().record(job_id, status)
    except redis.RedisError:
        # The delivery itself happened (or not) regardless; only its record is missing.
        logger.warning("job %s: could not record its callback delivery", job_id)


def enqueue_delivery(job_id: str, callback_url: str, envelope: Envelope) -> None:
    """Queue the callback of a job whose envelope is final. Never raises: the result stands."""
    now = time.time()
    try:
        deliveries().mark_pending(job_id, now)
    except redis.RedisError:
        logger.warning("job %s: could not record its callback as pending", job_id)
    try:
        app.send_task(
            CALLBACK_TASK_NAME,
            kwargs={
                "job_id": job_id,
                "callback_url": callback_url,
                "envelope": dict(envelope),
                "finished_at": now,
            },
            task_id=callback_task_id(job_id),
            queue=get_settings().queue,
            **event_reprs(job_id),
        )
    except Exception:
        logger.exception("job %s: could not queue its callback", job_id)
        _record(
            job_id,
            {
                "state": DeliveryState.FAILED.value,
                "attempts": 0,
                "last_error": "the callback could not be queued",
                "last_status": None,
                "delivered_at": None,
                "updated_at": now,
            },
        )


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
        outcome = sender().post(callback_url, body.encode(), headers)
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

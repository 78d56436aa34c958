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

import logging
import time
from collections.abc import Callable
from typing import Any

import celery
import redis
from celery import signals
from celery.concurrency.prefork import TaskPool as PreforkPool

from cards.deadletters import DeadLetter, DeadLetterStore, is_dead_letter
from cards.envelope import Envelope
from cards.jobs import TASK_NAME, SetDefaultCardJob, validate_job
from cards.redis_urls import redis_client
from cards.settings import get_settings
from worker.app import app
from worker.callbacks import enqueue_delivery
from worker.execution import Delivery, execute
from worker.gateway import StripeGateway
from worker.jobstate import JobStateStore
from worker.ordering import CustomerGuard
from worker.process_local import per_process
from worker.ratelimit import RedisRateLimiter
from worker.retries import RetryPolicy
from worker.runner import RetryLater, SetDefaultCardRunner
from worker.task_requests import EnvelopeRequest

__all__ = ["Attempt", "attempt_job", "attempt_with", "finish_job", "runner", "set_default_card"]

logger = logging.getLogger(__name__)


@per_process
def runner() -> SetDefaultCardRunner:
    """This process's runner, built after fork: sockets must not cross a fork."""
    settings = get_settings()
    client = redis_client(settings.job_state_url, settings.sentinel_master)
    rates = settings.rate_table
    limiter = (
        RedisRateLimiter(
            client,
            burst_seconds=settings.rate_limit_burst_seconds,
            max_wait_seconds=settings.rate_limit_max_wait_seconds,
            recovery_seconds=settings.rate_limit_recovery_seconds,
        )
        if rates
        else None
    )
    guard = (
        CustomerGuard(
            client,
            lock_seconds=settings.customer_lock_seconds,
            max_job_age_seconds=settings.max_job_age_seconds,
        )
        if settings.ordering
        else None
    )
    return SetDefaultCardRunner(
        gateway=StripeGateway.from_settings(settings),
        store=JobStateStore(client),
        policy=RetryPolicy.from_settings(settings),
        guard=guard,
        limiter=limiter,
        rates=rates,
        minimal_data=settings.minimal_data,
    )


@per_process
def dead_letters() -> DeadLetterStore:
    return DeadLetterStore.from_settings(get_settings())


def _keep_dead_letter(job_id: str, job: SetDefaultCardJob, envelope: Envelope) -> None:
    letter = DeadLetter(job_id, job.with_job_id(job_id).to_task_kwargs(), envelope, time.time())
    try:
        dead_letters().add(letter)
    except redis.RedisError:
        # The envelope still says why the job failed; only the replay shortcut is lost.
        logger.critical("job %s: could not keep it as a dead letter", job_id)


@signals.worker_process_init.connect
def _build_before_first_job(**_: Any) -> None:
    """Build this pool process's runner now, not inside its first job (a third of a
    second of imports and client set-up, measured on a bulk worker)."""
    try:
        runner()
    except Exception:  # the first job builds it again and answers for itself
        logger.exception("could not build the job runner at process start")


@signals.worker_ready.connect
def _build_in_main_process(sender: Any = None, **_: Any) -> None:
    """Pools without child processes (threads, solo) run jobs in the main process:
    build its runner before the first job, as pool processes do at their start."""
    if not isinstance(getattr(sender, "pool", None), PreforkPool):
        _build_before_first_job()


def finish_job(job: SetDefaultCardJob, job_id: str, envelope: Envelope) -> None:
    """What follows a final answer: keep a dead letter, send the callback."""
    if is_dead_letter(envelope):
        _keep_dead_letter(job_id, job, envelope)
    if job.callback_url is not None:
        enqueue_delivery(job_id, str(job.callback_url), envelope)


Attempt = Callable[[SetDefaultCardJob, str, Delivery], Envelope | RetryLater]


def attempt_with(shared: SetDefaultCardRunner) -> Attempt:
    """One attempt of a validated job by ``shared``, under its queue's and account's budget."""

    def attempt(job: SetDefaultCardJob, job_id: str, delivery: Delivery) -> Envelope | RetryLater:
        budget = shared.budget(delivery.queue, job.stripe_account)
        return shared.run(job, job_id, first_delivery=delivery.first, budget=budget)

    return attempt


def attempt_job(job: SetDefaultCardJob, job_id: str, delivery: Delivery) -> Envelope | RetryLater:
    """One attempt of a validated job by this process's runner."""
    return attempt_with(runner())(job, job_id, delivery)


@app.task(name=TASK_NAME, bind=True, max_retries=None, Request=EnvelopeRequest)
def set_default_card(self: celery.Task[Any, Envelope], *args: Any, **fields: Any) -> Envelope:
    return execute(self, args, fields, validate_job, attempt_job, finish_job)

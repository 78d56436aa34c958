"""Process wiring: every shared object of a worker process, built once after the fork.

One Redis client for the job-state URL (job state, customer locks, the rate
limiter, dead letters and callback deliveries share its pool), one Stripe
client, one callback sender, and the pipeline of each job kind. Each is built
on first use in each process (:func:`worker.process_local.per_process`), since
sockets must not cross a fork; pools without child processes build them when
the worker is ready. This is the only module that reads settings to build them.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import signals
from celery.concurrency.prefork import TaskPool as PreforkPool

from cards.deadletters import DeadLetterStore
from cards.deliveries import DeliveryStore
from cards.redis_urls import redis_client
from cards.settings import get_settings
from worker.attempts import AssignCard, ListCards, SetDefaultCard
from worker.dry_run import CheckDefaultCard
from worker.jobstate import JobStateStore
from worker.middleware.budget import Budget
from worker.middleware.customer_order import CustomerOrder
from worker.middleware.dead_letters import DeadLetters
from worker.middleware.notify import Notify
from worker.middleware.outcomes import Outcomes
from worker.middleware.retries import Retries
from worker.ordering import CustomerGuard
from worker.pipeline import JobKind, Pipeline, Step
from worker.process_local import per_process
from worker.ratelimit import RedisRateLimiter
from worker.retry_policy import RetryPolicy
from worker.stripe_api import StripeApi
from worker.webhook import CallbackSender

__all__ = ["callback_sender", "deliveries", "pipeline", "pipelines", "state_redis"]

logger = logging.getLogger(__name__)


@per_process
def state_redis() -> redis.Redis:
    """The job-state store's Redis client, shared by every store of this process."""
    settings = get_settings()
    return redis_client(settings.job_state_url, settings.sentinel_master)


@per_process
def deliveries() -> DeliveryStore:
    return DeliveryStore(state_redis(), get_settings().result_expires_seconds)


@per_process
def callback_sender() -> CallbackSender:
    return CallbackSender(get_settings().callback_allowlist)


@per_process
def pipelines() -> dict[str, Pipeline]:
    """Each job task's pipeline, by task name."""
    settings = get_settings()
    client = state_redis()
    stripe = StripeApi.from_settings(settings)
    policy = RetryPolicy.from_settings(settings)
    budget: list[Step] = []
    if settings.rate_table:
        limiter = RedisRateLimiter(
            client,
            burst_seconds=settings.rate_limit_burst_seconds,
            max_wait_seconds=settings.rate_limit_max_wait_seconds,
            recovery_seconds=settings.rate_limit_recovery_seconds,
        )
        budget.append(Budget(limiter, settings.rate_table, policy))
    order: list[Step] = []
    if settings.ordering:
        guard = CustomerGuard(
            client,
            lock_seconds=settings.customer_lock_seconds,
            max_job_age_seconds=settings.max_job_age_seconds,
        )
        order.append(CustomerOrder(guard, policy))
    retries = Retries(JobStateStore(client), policy)

    traced: list[Step] = []
    if settings.tracing:
        from worker.middleware.tracing import TraceAttributes  # the tracing extra's

        traced.append(TraceAttributes())

    def build(kind: JobKind, *steps: Step) -> Pipeline:
        return Pipeline(
            kind,
            [Outcomes(), *traced, *steps, *budget, retries],
            max_skew_seconds=settings.max_clock_skew_seconds,
        )

    minimal = settings.minimal_data
    built = [
        build(
            SetDefaultCard(stripe, minimal_data=minimal),
            Notify(deliveries()),
            DeadLetters(DeadLetterStore.from_settings(settings, client)),
            *order,
        ),
        build(CheckDefaultCard(stripe, minimal_data=minimal)),
        build(AssignCard(stripe, minimal_data=minimal)),
        build(ListCards(stripe, minimal_data=minimal)),
    ]
    return {pipeline.kind.task_name: pipeline for pipeline in built}


def pipeline(task_name: str) -> Pipeline:
    """This process's pipeline for the job task ``task_name``."""
    return pipelines()[task_name]


@signals.worker_process_init.connect
def _build_before_first_job(**_: Any) -> None:
    """Build this pool process's objects now, not inside its first job (a third of a
    second of imports and client set-up on a bulk worker)."""
    try:
        pipelines()
    except Exception:  # the first job builds them again and answers for itself
        logger.exception("could not build the job pipelines at process start")


@signals.worker_ready.connect
def _build_in_main_process(sender: Any = None, **_: Any) -> None:
    """Pools without child processes (threads, solo) run jobs in the main process:
    build its objects before the first job, as pool processes do at their start."""
    if not isinstance(getattr(sender, "pool", None), PreforkPool):
        _build_before_first_job()

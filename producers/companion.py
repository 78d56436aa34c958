"""Enqueue the seed API's companion jobs: assign a card, list a customer's cards.

Like :mod:`producers.jobs`: validate with the shared contract
(:mod:`cards.companion_jobs`), then send the task by name with the job id as
the Celery task id. Read the envelope with :func:`producers.jobs.get_result`.
"""

from __future__ import annotations

from celery import Celery

from cards.companion_jobs import (
    ASSIGN_TASK_NAME,
    LIST_TASK_NAME,
    AssignCardJob,
    ListCardsJob,
    validate_assign_job,
    validate_list_job,
)
from cards.redaction import event_reprs
from cards.settings import get_settings
from producers.jobs import check_request_time, producer_app

__all__ = ["enqueue_assign_card", "enqueue_companion_job", "enqueue_list_cards"]


def enqueue_companion_job(job: AssignCardJob | ListCardsJob, app: Celery | None = None) -> str:
    """Send a validated companion job by task name; its job id.

    Raises :class:`~cards.jobs.InvalidJob` (nothing is sent) if its requested_at
    is refused. Task events (Flower) show the job id, not the fields.
    """
    check_request_time(job)
    task = ASSIGN_TASK_NAME if isinstance(job, AssignCardJob) else LIST_TASK_NAME
    job = job.stamped()
    job_id = job.job_id
    assert job_id is not None  # stamped() always sets it
    (app or producer_app()).send_task(
        task,
        kwargs=job.to_task_kwargs(),
        task_id=job_id,
        queue=get_settings().queue,
        **event_reprs(job_id),
    )
    return job_id


def _fields(user_id: str, job_id: str | None, stripe_account: str | None) -> dict[str, str]:
    fields = {"userId": user_id, "job_id": job_id, "stripe_account": stripe_account}
    return {k: v for k, v in fields.items() if v is not None}


def enqueue_assign_card(
    user_id: str,
    source: str,
    *,
    job_id: str | None = None,
    stripe_account: str | None = None,
    app: Celery | None = None,
) -> str:
    """Attach the card behind ``source`` (``tok_…`` or ``src_…``) to the customer; the job id.

    Raises :class:`~cards.jobs.InvalidJob` (nothing is enqueued) when a field is wrong.
    """
    job = validate_assign_job({**_fields(user_id, job_id, stripe_account), "source": source})
    return enqueue_companion_job(job, app)


def enqueue_list_cards(
    user_id: str,
    *,
    job_id: str | None = None,
    stripe_account: str | None = None,
    app: Celery | None = None,
) -> str:
    """List the customer's cards; the job id. :class:`~cards.jobs.InvalidJob` if wrong."""
    return enqueue_companion_job(validate_list_job(_fields(user_id, job_id, stripe_account)), app)

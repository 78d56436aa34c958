"""The job tasks: Celery glue around each kind's pipeline (:mod:`worker.pipeline`).

Any Celery client may send them by name with the seed API's body as keyword
arguments::

    app.send_task("cards.set_default_card",
                  kwargs={"userId": "cus_…", "default_source": "card_…"})

Every task always ends in state SUCCESS with an envelope (see
:mod:`cards.envelope`): bad input, Stripe refusals and exhausted retries are
answers, not task failures; a :class:`~worker.pipeline.RetryLater` becomes
Celery's retry, with its cause as the retrying job's info.
"""

from __future__ import annotations

from typing import Any, cast

import celery

from cards.companion_jobs import ASSIGN_TASK_NAME, LIST_TASK_NAME, CardList
from cards.envelope import Envelope, RetryCause
from cards.jobs import CHECK_TASK_NAME, TASK_NAME
from cards.rabbitmq import queue_of
from cards.redaction import event_reprs
from cards.settings import get_settings
from worker import wiring
from worker.app import app
from worker.pipeline import Answer, Delivery, RetryLater
from worker.task_requests import EnvelopeRequest

__all__ = [
    "assign_card",
    "check_default_card",
    "delivery_of",
    "list_cards",
    "run_task",
    "set_default_card",
]


def delivery_of(task: celery.Task[Any, Any]) -> Delivery:
    """This delivery of ``task``'s message: first or a retry, and its queue."""
    info = task.request.delivery_info or {}
    # On RabbitMQ a retry comes back through the delay exchanges, its routing key
    # prefixed with the delay's digits (cards.rabbitmq.queue_of strips them).
    queue = queue_of(str(info.get("routing_key") or "")) or get_settings().queue
    retries = task.request.retries or 0
    return Delivery(first=not retries, queue=str(queue), number=retries + 1)


def run_task(task: celery.Task[Any, Any], args: tuple[Any, ...], fields: dict[str, Any]) -> Answer:
    """One delivery of a job task through its kind's pipeline; a retry is Celery's."""
    job_id = str(task.request.id)
    outcome = wiring.pipeline(str(task.name)).run(job_id, delivery_of(task), fields, args)
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


@app.task(name=TASK_NAME, bind=True, max_retries=None, Request=EnvelopeRequest)
def set_default_card(self: celery.Task[Any, Envelope], *args: Any, **fields: Any) -> Envelope:
    """Make a card the customer's default; data is the customer."""
    return cast(Envelope, run_task(self, args, fields))


@app.task(name=CHECK_TASK_NAME, bind=True, max_retries=None, Request=EnvelopeRequest)
def check_default_card(self: celery.Task[Any, Envelope], *args: Any, **fields: Any) -> Envelope:
    """Check, reading only, that a set_default_card job with these fields would succeed."""
    return cast(Envelope, run_task(self, args, fields))


@app.task(name=ASSIGN_TASK_NAME, bind=True, max_retries=None, Request=EnvelopeRequest)
def assign_card(self: celery.Task[Any, Envelope], *args: Any, **fields: Any) -> Envelope:
    """Attach a card to a customer; data ``{"cardId", "card"}``."""
    return cast(Envelope, run_task(self, args, fields))


@app.task(name=LIST_TASK_NAME, bind=True, max_retries=None, Request=EnvelopeRequest)
def list_cards(
    self: celery.Task[Any, Envelope | CardList], *args: Any, **fields: Any
) -> Envelope | CardList:
    """List a customer's cards; data is the list."""
    return cast(Envelope | CardList, run_task(self, args, fields))

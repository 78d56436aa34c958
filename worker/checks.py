"""``cards.check_default_card``: would this ``set_default_card`` job succeed? Reads only.

``cards migrate --dry-run`` asks this of every row before a migration writes
anything: does the customer exist, and is the card, source or PaymentMethod
attached to it? The task takes the same fields as ``cards.set_default_card``
(the same contract, :func:`cards.jobs.validate_job`), runs on the same queue
machinery (the process's shared runner, retries and failure envelopes, and the
rate budget of the queue it came from, so a dry run spends the bulk queue's
budget, not live traffic's), and makes only GET calls: no idempotency key, no
write.

The answer is an envelope. ``status: true`` when the job would be applied,
with ``data`` ``{"userId", "default_source", "already_default"}``; else the
failure a real job would get (``no_such_customer``, ``not_attached``, …). The
decision is one pure function, :func:`verdict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import celery

from cards.envelope import Envelope, ErrorKind, failure
from cards.jobs import CHECK_TASK_NAME, SetDefaultCardJob, TargetField, validate_job
from worker.app import app
from worker.errors import InvalidRequest
from worker.execution import Delivery, execute
from worker.gateway import StripeGateway
from worker.runner import RetryLater
from worker.task_requests import EnvelopeRequest
from worker.tasks import runner as process_runner

__all__ = ["CHECK_MESSAGE", "CHECK_TASK_NAME", "check_default_card", "verdict"]

CHECK_MESSAGE: Final = "would be applied"


def _attached_ids(customer: Mapping[str, Any]) -> set[str]:
    sources = customer.get("sources") or {}
    return {str(item.get("id")) for item in sources.get("data") or []}


def verdict(
    job: SetDefaultCardJob,
    customer: Mapping[str, Any],
    payment_method: Mapping[str, Any] | None = None,
) -> Envelope:
    """The dry run's answer for a job, from what Stripe has now (pure)."""
    if job.target is TargetField.DEFAULT_PAYMENT_METHOD:
        current = (customer.get("invoice_settings") or {}).get("default_payment_method")
        attached = payment_method is not None and payment_method.get("customer") == job.userId
        what, verb = "payment method", "attach"
    else:
        current = customer.get("default_source")
        attached = job.default_source in _attached_ids(customer)
        what, verb = "card", "assign"
    if not attached and current != job.default_source:
        return failure(
            f"{what} is not attached to this customer; {verb} it first",
            ErrorKind.NOT_ATTACHED,
            param="default_source",
            attempts=1,
        )
    return {
        "status": True,
        "message": CHECK_MESSAGE,
        "data": {
            "userId": job.userId,
            "default_source": job.default_source,
            "already_default": current == job.default_source,
        },
    }


def _look(gateway: StripeGateway, job: SetDefaultCardJob) -> Envelope:
    customer = gateway.retrieve_customer(job)
    payment_method = None
    if job.target is TargetField.DEFAULT_PAYMENT_METHOD:
        try:
            payment_method = gateway.retrieve_payment_method(job.default_source, job.stripe_account)
        except InvalidRequest:  # no such PaymentMethod: not this customer's either
            payment_method = None
    return verdict(job, customer, payment_method)


def _attempt(job: SetDefaultCardJob, job_id: str, delivery: Delivery) -> Envelope | RetryLater:
    shared = process_runner()
    return shared.run_attempt(
        job_id,
        lambda generation: _look(shared.gateway, job),
        lambda answer: answer,
        first_delivery=delivery.first,
        budget=shared.budget(delivery.queue, job.stripe_account),
    )


@app.task(name=CHECK_TASK_NAME, bind=True, max_retries=None, Request=EnvelopeRequest)
def check_default_card(self: celery.Task[Any, Envelope], *args: Any, **fields: Any) -> Envelope:
    """Check, reading only, that a set_default_card job with these fields would succeed."""
    return execute(self, args, fields, validate_job, _attempt)

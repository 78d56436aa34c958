"""The dry run, ``cards.check_default_card``: would this ``set_default_card`` job succeed?

``cards migrate --dry-run`` asks it of every row before a migration writes:
does the customer exist, and is the card, source or PaymentMethod attached to
it? Same contract as ``cards.set_default_card``, same pipeline steps (retries,
and the budget of the queue it came from), GET calls only: no idempotency key,
no write. ``status: true`` with ``{"userId", "default_source",
"already_default"}``, else the failure a real job would get; the decision is
the pure :func:`verdict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from cards.envelope import Envelope, ErrorKind, failure
from cards.jobs import SetDefaultCardJob, TargetField
from cards.kinds import CHECK_DEFAULT_CARD
from worker.attempts import StripeKind
from worker.errors import InvalidRequest

__all__ = ["CHECK_MESSAGE", "CheckDefaultCard", "verdict"]

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


class CheckDefaultCard(StripeKind):
    """``cards.check_default_card``: the dry run of a ``set_default_card`` job."""

    contract = CHECK_DEFAULT_CARD

    def attempt(self, job: SetDefaultCardJob, job_id: str, generation: int) -> Envelope:
        customer = self.stripe.retrieve_customer(job)
        payment_method = None
        if job.target is TargetField.DEFAULT_PAYMENT_METHOD:
            try:
                payment_method = self.stripe.retrieve_payment_method(
                    job.default_source, job.stripe_account
                )
            except InvalidRequest:  # no such PaymentMethod: not this customer's either
                payment_method = None
        return verdict(job, customer, payment_method)

"""The Stripe attempt of each job kind that writes or lists: its contract and one call.

A kind validates its fields (:mod:`cards.jobs`, :mod:`cards.companion_jobs`) and
makes one Stripe call at a key generation, raising the classified errors of
:mod:`worker.errors`; everything else a job goes through is the pipeline's
steps (:mod:`worker.middleware`). After a saved 5xx a write **reconciles,
then moves to a new key generation**: at generation > 0 it first reads what
Stripe has and, if the earlier call was applied, answers that without a second
write. Either way one job applies at most one write (see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

from cards.companion_jobs import (
    AssignCardJob,
    CardList,
    ListCardsJob,
    assigned,
    listed,
)
from cards.envelope import Envelope, success
from cards.jobs import SetDefaultCardJob, TargetField
from cards.kinds import ASSIGN_CARD, LIST_CARDS, SET_DEFAULT_CARD, Kind
from cards.redaction import redact_customer, redact_source
from worker.idempotency import idempotency_key
from worker.stripe_api import StripeApi

__all__ = [
    "JOB_ID_METADATA_KEY",
    "AssignCard",
    "ListCards",
    "SetDefaultCard",
    "StripeKind",
    "already_applied",
    "tagged_card",
]

#: Metadata key of the job id on a card that ``assign_card`` attached.
JOB_ID_METADATA_KEY: Final = "cards_job_id"


def already_applied(customer: Mapping[str, Any], job: SetDefaultCardJob) -> bool:
    """Does Stripe's customer already have the job's card as its default?"""
    if job.target is TargetField.DEFAULT_PAYMENT_METHOD:
        settings = customer.get("invoice_settings") or {}
        return bool(settings.get("default_payment_method") == job.default_source)
    return bool(customer.get("default_source") == job.default_source)


def tagged_card(cards: Sequence[Mapping[str, Any]], job_id: str) -> dict[str, Any] | None:
    """The card that job ``job_id`` attached, if the customer has it."""
    for card in cards:
        if (card.get("metadata") or {}).get(JOB_ID_METADATA_KEY) == job_id:
            return dict(card)
    return None


class StripeKind:
    """A job kind of :data:`cards.kinds.KINDS` with its access to Stripe: the process's
    one client, and whether answers keep only the minimal data (CARDS_MINIMAL_DATA)."""

    contract: ClassVar[Kind]

    def __init__(self, stripe: StripeApi, *, minimal_data: bool = False) -> None:
        self.stripe = stripe
        self.minimal_data = minimal_data
        self.task_name = self.contract.task_name

    def validate(self, fields: object) -> Any:
        """The kind's validated job; :class:`cards.jobs.InvalidJob` if the fields break it."""
        assert self.contract.validate is not None
        return self.contract.validate(fields)


class SetDefaultCard(StripeKind):
    """``cards.set_default_card``: make a card, source or PaymentMethod the default."""

    contract = SET_DEFAULT_CARD

    def attempt(self, job: SetDefaultCardJob, job_id: str, generation: int) -> Envelope:
        if generation > 0:
            customer = self.stripe.retrieve_customer(job)
            if already_applied(customer, job):
                return success(redact_customer(customer, self.minimal_data))
        customer = self.stripe.set_default(job, idempotency_key(job_id, generation))
        return success(redact_customer(customer, self.minimal_data))


class AssignCard(StripeKind):
    """``cards.assign_card``: attach a card to a customer, tagged with the job id.

    The tag lets a later generation find a card attached by a call that failed
    after Stripe applied it: a reusable test token would otherwise mint a second
    card, and a single-use token would fail as already used.
    """

    contract = ASSIGN_CARD

    def attempt(self, job: AssignCardJob, job_id: str, generation: int) -> Envelope:
        if generation > 0:
            cards = self.stripe.list_cards(job.userId, job.stripe_account)
            found = tagged_card(cards, job_id)
            if found is not None:
                return assigned(redact_source(found, self.minimal_data))
        card = self.stripe.attach_source(
            job.userId,
            job.source,
            idempotency_key(job_id, generation, prefix=ASSIGN_CARD.key_prefix),
            job.stripe_account,
            metadata={JOB_ID_METADATA_KEY: job_id},
        )
        return assigned(redact_source(card, self.minimal_data))


class ListCards(StripeKind):
    """``cards.list_cards``: a customer's cards. Reads only: no idempotency key."""

    contract = LIST_CARDS

    def attempt(self, job: ListCardsJob, job_id: str, generation: int) -> CardList:
        cards = self.stripe.list_cards(job.userId, job.stripe_account)
        return listed([redact_source(card, self.minimal_data) for card in cards])

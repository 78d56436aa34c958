"""The seed API's companion tasks: ``cards.assign_card`` and ``cards.list_cards``.

The seed's use cases assign a card (``POST /api/cards/assign``) before making
it the default, and list a customer's cards (``GET /api/cards/{customerId}``)
to pick one. Both are jobs like ``cards.set_default_card``: validated contract
(:mod:`cards.companion_jobs`), the process's one Stripe client, state store and
retry policy (:func:`worker.tasks.runner`), the same classification, retries
and failure envelopes (:class:`worker.runner.JobRunner`), and they always end
in state SUCCESS with an envelope.

``assign_card`` writes under ``cards-assign:<job_id>`` and tags the new card
with the job id (metadata ``cards_job_id``). After a saved 5xx the next attempt
reconciles as ``set_default_card`` does: it lists the customer's cards and, if
one carries the tag, the earlier call was applied and the job succeeds with
that card, without a second write; otherwise it writes under the next key
generation. A reusable test token (``tok_visa``) would otherwise mint a second
card, and a single-use token would fail as already used.

``list_cards`` only reads, so it sends no idempotency key; transient failures
are retried like any job's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

import celery

from cards.companion_jobs import (
    ASSIGN_TASK_NAME,
    LIST_TASK_NAME,
    AssignCardJob,
    CardList,
    ListCardsJob,
    assigned,
    listed,
    validate_assign_job,
    validate_list_job,
)
from cards.envelope import Envelope
from cards.redaction import redact_source
from worker.app import app
from worker.execution import Delivery, execute
from worker.gateway import StripeGateway
from worker.idempotency import ASSIGN_KEY_PREFIX, idempotency_key
from worker.runner import RetryLater
from worker.task_requests import EnvelopeRequest
from worker.tasks import runner as process_runner

__all__ = ["JOB_ID_METADATA_KEY", "assign_attempt", "assign_card", "list_cards", "tagged_card"]


#: Metadata key of the job id on a card that ``assign_card`` attached.
JOB_ID_METADATA_KEY: Final = "cards_job_id"

JobT = TypeVar("JobT", AssignCardJob, ListCardsJob)
AnswerT = TypeVar("AnswerT")
ResultT = TypeVar("ResultT", Envelope, CardList)


def tagged_card(cards: Sequence[Mapping[str, Any]], job_id: str) -> dict[str, Any] | None:
    """The card that job ``job_id`` attached, if the customer has it."""
    for card in cards:
        if (card.get("metadata") or {}).get(JOB_ID_METADATA_KEY) == job_id:
            return dict(card)
    return None


def assign_attempt(
    gateway: StripeGateway, job: AssignCardJob, job_id: str, generation: int
) -> dict[str, Any]:
    """One attempt of an assignment at a key generation; the attached card."""
    if generation > 0:
        found = tagged_card(gateway.list_cards(job.userId, job.stripe_account), job_id)
        if found is not None:
            return found
    return gateway.attach_source(
        job.userId,
        job.source,
        idempotency_key(job_id, generation, prefix=ASSIGN_KEY_PREFIX),
        job.stripe_account,
        metadata={JOB_ID_METADATA_KEY: job_id},
    )


def list_attempt(
    gateway: StripeGateway, job: ListCardsJob, job_id: str, generation: int
) -> list[dict[str, Any]]:
    return gateway.list_cards(job.userId, job.stripe_account)


def _assigned(card: dict[str, Any], minimal: bool) -> Envelope:
    return assigned(redact_source(card, minimal))


def _listed(cards: list[dict[str, Any]], minimal: bool) -> CardList:
    return listed([redact_source(card, minimal) for card in cards])


def _attempting(
    attempt: Callable[[StripeGateway, JobT, str, int], AnswerT],
    on_success: Callable[[AnswerT, bool], ResultT],
) -> Callable[[JobT, str, Delivery], ResultT | Envelope | RetryLater]:
    """One attempt of a companion job through the process's shared runner; its answer
    kept as CARDS_MINIMAL_DATA says, never with a secret."""

    def run(job: JobT, job_id: str, delivery: Delivery) -> ResultT | Envelope | RetryLater:
        shared = process_runner()
        return shared.run_attempt(
            job_id,
            lambda generation: attempt(shared.gateway, job, job_id, generation),
            lambda answer: on_success(answer, shared.minimal_data),
            first_delivery=delivery.first,
            budget=shared.budget(delivery.queue, job.stripe_account),
        )

    return run


@app.task(name=ASSIGN_TASK_NAME, bind=True, max_retries=None, Request=EnvelopeRequest)
def assign_card(self: celery.Task[Any, Envelope], *args: Any, **fields: Any) -> Envelope:
    """Attach a card to a customer; data ``{"cardId", "card"}``."""
    return execute(self, args, fields, validate_assign_job, _attempting(assign_attempt, _assigned))


@app.task(name=LIST_TASK_NAME, bind=True, max_retries=None, Request=EnvelopeRequest)
def list_cards(
    self: celery.Task[Any, Envelope | CardList], *args: Any, **fields: Any
) -> Envelope | CardList:
    """List a customer's cards; data is the list."""
    return execute(self, args, fields, validate_list_job, _attempting(list_attempt, _listed))

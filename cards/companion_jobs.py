"""Contracts of the seed API's companion jobs: assign a card, list a customer's cards.

``cards.assign_card`` (``{"userId", "source": "tok_…"}``) and ``cards.list_cards``
run through the same machinery as ``set_default_card``, and their contracts
follow :mod:`cards.jobs`: id rules from :mod:`cards.ids`, unknown fields refused
and named, messages that name the field and the rule, never the value. Their
success envelopes carry the seed's shapes: ``{"cardId", "card"}`` for an
assigned card, the list of cards itself for a listing. See docs/contract.md.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Final, Self, TypedDict

from pydantic import AwareDatetime, BaseModel, ConfigDict

from cards.envelope import Envelope
from cards.ids import ASSIGN_SOURCE, AccountId, AssignSourceId, CustomerId, JobId
from cards.jobs import validate_as

__all__ = [
    "ASSIGN_CARD_MESSAGE",
    "ASSIGN_SOURCE_PREFIXES",
    "ASSIGN_TASK_NAME",
    "LIST_CARDS_MESSAGE",
    "LIST_TASK_NAME",
    "AssignCardJob",
    "CardList",
    "ListCardsJob",
    "assigned",
    "listed",
    "validate_assign_job",
    "validate_list_job",
]

ASSIGN_TASK_NAME: Final = "cards.assign_card"
LIST_TASK_NAME: Final = "cards.list_cards"

ASSIGN_SOURCE_PREFIXES: Final = ASSIGN_SOURCE.prefixes

#: Success texts, in the seed API's language like its ``set_default_card`` message.
ASSIGN_CARD_MESSAGE: Final = "Tarjeta asignada con éxito"
LIST_CARDS_MESSAGE: Final = "Tarjetas obtenidas con éxito"


class _CompanionJob(BaseModel):
    """Fields every companion job shares with ``set_default_card``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    userId: CustomerId
    job_id: JobId | None = None
    requested_at: AwareDatetime | None = None
    stripe_account: AccountId | None = None

    def stamped(self) -> Self:
        """This job with a job id and a request time filled in."""
        return self.model_copy(
            update={
                "job_id": self.job_id or str(uuid.uuid4()),
                "requested_at": self.requested_at or datetime.now(UTC),
            }
        )

    def to_task_kwargs(self) -> dict[str, str]:
        """The Celery kwargs: JSON-safe, without unset fields."""
        return {k: str(v) for k, v in self.model_dump(mode="json", exclude_none=True).items()}


class AssignCardJob(_CompanionJob):
    """Attach a card to a customer from a token (``tok_…``) or a card source (``src_…``)."""

    source: AssignSourceId


class ListCardsJob(_CompanionJob):
    """List the cards attached to a customer."""


def validate_assign_job(fields: object) -> AssignCardJob:
    """Validate raw fields or raise :class:`~cards.jobs.InvalidJob`."""
    return validate_as(AssignCardJob, fields)


def validate_list_job(fields: object) -> ListCardsJob:
    """Validate raw fields or raise :class:`~cards.jobs.InvalidJob`."""
    return validate_as(ListCardsJob, fields)


class CardList(TypedDict):
    """A listing's envelope: ``data`` is the list of cards, as the seed reads ``data[1].id``."""

    status: bool
    message: str
    data: list[dict[str, Any]]


def assigned(card: dict[str, Any]) -> Envelope:
    """The success envelope of an assignment: the new card's id and the card."""
    return {
        "status": True,
        "message": ASSIGN_CARD_MESSAGE,
        "data": {"cardId": card["id"], "card": card},
    }


def listed(cards: list[dict[str, Any]]) -> CardList:
    return {"status": True, "message": LIST_CARDS_MESSAGE, "data": cards}

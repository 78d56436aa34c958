"""Contracts of the seed API's companion jobs: assign a card, list a customer's cards.

The seed's use cases call ``POST /api/cards/assign`` (``{"userId", "source":
"tok_…"}``) before setting a default, and ``GET /api/cards/{customerId}`` to
pick one. Both run as jobs through the same machinery as ``set_default_card``
(validated contract, idempotency key from the job id, the same retries and
envelope), so their contracts follow :mod:`cards.jobs`: unknown fields are
refused and named, and messages name the field and the rule, never the value.

Their success envelopes carry the seed's shapes: ``{"cardId", "card"}`` for an
assigned card, and the list of cards itself for a listing.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Final, Self, TypedDict, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    StrictStr,
    ValidationError,
    field_validator,
)

from cards.envelope import Envelope
from cards.jobs import InvalidJob, check_job_id, check_stripe_id, invalid_job_from

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

#: A card token (``tok_…``, single use) or a reusable card source (``src_…``).
ASSIGN_SOURCE_PREFIXES: Final = ("tok_", "src_")

#: Success texts, in the seed API's language like its ``set_default_card`` message.
ASSIGN_CARD_MESSAGE: Final = "Tarjeta asignada con éxito"
LIST_CARDS_MESSAGE: Final = "Tarjetas obtenidas con éxito"


class _CompanionJob(BaseModel):
    """Fields every companion job shares with ``set_default_card``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    userId: StrictStr
    job_id: StrictStr | None = None
    requested_at: AwareDatetime | None = None
    stripe_account: StrictStr | None = None

    @field_validator("userId")
    @classmethod
    def _user_id(cls, value: str) -> str:
        return check_stripe_id(value, "userId", ("cus_",))

    @field_validator("stripe_account")
    @classmethod
    def _stripe_account(cls, value: str | None) -> str | None:
        return None if value is None else check_stripe_id(value, "stripe_account", ("acct_",))

    @field_validator("job_id")
    @classmethod
    def _job_id(cls, value: str | None) -> str | None:
        return None if value is None else check_job_id(value)

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

    source: StrictStr

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        return check_stripe_id(value, "source", ASSIGN_SOURCE_PREFIXES)


class ListCardsJob(_CompanionJob):
    """List the cards attached to a customer."""


JobT = TypeVar("JobT", bound=_CompanionJob)


def _validate(model: type[JobT], fields: object) -> JobT:
    if not isinstance(fields, dict):
        raise InvalidJob(["job must be a JSON object of named fields"], ["job"])
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise invalid_job_from(exc, model) from None


def validate_assign_job(fields: object) -> AssignCardJob:
    """Validate raw fields or raise :class:`~cards.jobs.InvalidJob`."""
    return _validate(AssignCardJob, fields)


def validate_list_job(fields: object) -> ListCardsJob:
    """Validate raw fields or raise :class:`~cards.jobs.InvalidJob`."""
    return _validate(ListCardsJob, fields)


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

"""Every kind of job, once: its task name, its contract and its idempotency-key prefix.

Producers send a validated job under its kind's task name (:func:`kind_of`); the
worker writes to Stripe under its kind's key prefix, so that a job id reused for
another kind of job never replays the other's saved answer. A kind without a
prefix only reads. ``check_default_card`` shares ``set_default_card``'s contract
and is sent only by task name (``cards migrate --dry-run``); a batch's rows are
``set_default_card`` jobs, checked by :func:`cards.batches.validate_batch`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

from pydantic import BaseModel

from cards.batches import BATCH_TASK_NAME
from cards.companion_jobs import (
    ASSIGN_TASK_NAME,
    LIST_TASK_NAME,
    AssignCardJob,
    ListCardsJob,
    validate_assign_job,
    validate_list_job,
)
from cards.jobs import CHECK_TASK_NAME, TASK_NAME, SetDefaultCardJob, validate_job

__all__ = [
    "ASSIGN_CARD",
    "CHECK_DEFAULT_CARD",
    "KINDS",
    "LIST_CARDS",
    "SET_DEFAULT_CARD",
    "SET_DEFAULT_CARDS",
    "Job",
    "Kind",
    "kind_of",
]

#: A validated job of any kind a producer enqueues on its own.
Job: TypeAlias = SetDefaultCardJob | AssignCardJob | ListCardsJob


@dataclass(frozen=True)
class Kind:
    """One kind of job. ``model``/``validate`` are None for the batch, whose rows are jobs."""

    name: str
    task_name: str
    model: type[BaseModel] | None
    validate: Callable[[object], BaseModel] | None
    #: The prefix of its Stripe idempotency keys; None: the kind never writes.
    key_prefix: str | None


SET_DEFAULT_CARD: Final = Kind(
    "set_default_card", TASK_NAME, SetDefaultCardJob, validate_job, key_prefix="cards-sdc"
)
CHECK_DEFAULT_CARD: Final = Kind(
    "check_default_card", CHECK_TASK_NAME, SetDefaultCardJob, validate_job, key_prefix=None
)
ASSIGN_CARD: Final = Kind(
    "assign_card", ASSIGN_TASK_NAME, AssignCardJob, validate_assign_job, key_prefix="cards-assign"
)
LIST_CARDS: Final = Kind(
    "list_cards", LIST_TASK_NAME, ListCardsJob, validate_list_job, key_prefix=None
)
SET_DEFAULT_CARDS: Final = Kind(
    "set_default_cards", BATCH_TASK_NAME, None, None, key_prefix=SET_DEFAULT_CARD.key_prefix
)

KINDS: Final = (SET_DEFAULT_CARD, CHECK_DEFAULT_CARD, ASSIGN_CARD, LIST_CARDS, SET_DEFAULT_CARDS)

#: The kind a model's job is enqueued as: the first in KINDS with that model.
_BY_MODEL: Final[dict[type[BaseModel], Kind]] = {
    kind.model: kind for kind in reversed(KINDS) if kind.model is not None
}


def kind_of(job: BaseModel) -> Kind:
    """The kind a validated job is enqueued as (``KeyError`` for a model of no kind)."""
    return _BY_MODEL[type(job)]

"""The ``set_default_card`` job contract, shared by every producer and the worker.

A job is validated by the producer before it is sent and by the worker when it
arrives (any Celery client can send the task by name). Its id rules are
:mod:`cards.ids`; messages name the field and the rule, never the value.
:func:`accepts_quickly` is :func:`validate_job`'s "yes" for plain rows, from the
same rules' patterns, without building a model. See docs/contract.md.
"""

from __future__ import annotations

import difflib
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from cards.ids import (
    DEFAULT_SOURCE,
    MAX_CALLBACK_URL_LENGTH,
    MAX_JOB_ID_LENGTH,
    MAX_STRIPE_ID_LENGTH,
    AccountId,
    CallbackUrl,
    CustomerId,
    DefaultSourceId,
    JobId,
    check_job_id,
    check_stripe_id,
    id_rules,
)

__all__ = [
    "CHECK_TASK_NAME",
    "MAX_CALLBACK_URL_LENGTH",
    "MAX_JOB_ID_LENGTH",
    "MAX_STRIPE_ID_LENGTH",
    "SOURCE_PREFIXES",
    "TASK_NAME",
    "InvalidJob",
    "SetDefaultCardJob",
    "TargetField",
    "accepts_quickly",
    "check_job_id",
    "check_requested_at",
    "check_stripe_id",
    "invalid_job_from",
    "quick_pattern",
    "validate_as",
    "validate_job",
]

TASK_NAME: Final = "cards.set_default_card"
#: The read-only check of the same fields (``cards migrate --dry-run``): would it succeed?
CHECK_TASK_NAME: Final = "cards.check_default_card"

#: How much of an unknown field's name is quoted back in a message.
MAX_QUOTED_NAME: Final = 40

SOURCE_PREFIXES: Final = DEFAULT_SOURCE.prefixes


class TargetField(StrEnum):
    """Which customer field a job sets, by the kind of id it carries."""

    DEFAULT_SOURCE = "default_source"
    DEFAULT_PAYMENT_METHOD = "invoice_settings.default_payment_method"


class InvalidJob(ValueError):
    """A job that must not be sent to Stripe. ``str()`` is the human message."""

    def __init__(self, problems: list[str], fields: list[str]) -> None:
        self.problems = problems
        self.fields = fields
        super().__init__("invalid job: " + "; ".join(problems))


def check_requested_at(
    requested_at: datetime, now: datetime, *, max_age_seconds: float, max_skew_seconds: float
) -> None:
    """``ValueError`` if ``requested_at`` is more than the clock skew ahead of ``now``, or
    older than the job age limit: a far-future time would supersede every later request
    for the customer. (Pure.)"""
    ahead = (requested_at - now).total_seconds()
    if ahead > max_skew_seconds:
        raise ValueError(f"requested_at must not be more than {max_skew_seconds:g} s in the future")
    if -ahead > max_age_seconds:
        raise ValueError(f"requested_at must not be more than {max_age_seconds:g} s in the past")


class SetDefaultCardJob(BaseModel):
    """One request to make a card (or PaymentMethod) a customer's default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    userId: CustomerId
    default_source: DefaultSourceId
    job_id: JobId | None = None
    requested_at: AwareDatetime | None = None
    stripe_account: AccountId | None = None
    callback_url: CallbackUrl | None = None

    @property
    def target(self) -> TargetField:
        if self.default_source.startswith("pm_"):
            return TargetField.DEFAULT_PAYMENT_METHOD
        return TargetField.DEFAULT_SOURCE

    def stamped(self) -> SetDefaultCardJob:
        """This job with the producer's defaults filled in: a job id and a request time."""
        return self.model_copy(
            update={
                "job_id": self.job_id or str(uuid.uuid4()),
                "requested_at": self.requested_at or datetime.now(UTC),
            }
        )

    def with_job_id(self, job_id: str) -> SetDefaultCardJob:
        return self if self.job_id == job_id else self.model_copy(update={"job_id": job_id})

    def to_task_kwargs(self) -> dict[str, str]:
        """The Celery kwargs: JSON-safe, without unset fields."""
        return {k: str(v) for k, v in self.model_dump(mode="json", exclude_none=True).items()}


_RULES: Final = {
    "missing": "is required",
    "string_type": "must be a string",
    "datetime_type": "must be an ISO 8601 date-time",
    "datetime_parsing": "must be an ISO 8601 date-time",
    "datetime_from_date_parsing": "must be an ISO 8601 date-time",
    "timezone_aware": "must include a time zone",
    "url_type": "must be a string URL",
    "url_parsing": "must be a valid URL",
    "url_scheme": "must be an http or https URL",
    "string_too_long": f"must be at most {MAX_CALLBACK_URL_LENGTH} characters",
    "too_long": f"must be at most {MAX_CALLBACK_URL_LENGTH} characters",
}


def _quote_name(name: object) -> str:
    text = str(name)
    if len(text) > MAX_QUOTED_NAME:
        text = text[:MAX_QUOTED_NAME] + "…"
    # ascii() escapes control and non-printable characters, so a message stays one line.
    return ascii(text)[1:-1]


def _describe(error: Any, known: Iterable[str]) -> tuple[str, str]:
    """(field, message) for one pydantic error, without echoing the input."""
    loc = error.get("loc") or ("job",)
    field = str(loc[0])
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        quoted = _quote_name(field)
        hint = difflib.get_close_matches(field, list(known), n=1)
        suggestion = f' (did you mean "{hint[0]}"?)' if hint else ""
        return quoted, f'unknown field "{quoted}"{suggestion}'
    if kind == "value_error":
        # Our validators already write "<field> <rule>"; pydantic prefixes "Value error, ".
        return field, str(error.get("ctx", {}).get("error", error.get("msg", "")))
    if kind == "model_type":
        return "job", "job must be a JSON object of named fields"
    return field, f"{field} {_RULES.get(kind, 'is invalid')}"


ModelT = TypeVar("ModelT", bound=BaseModel)


def validate_as(model: type[ModelT], fields: object) -> ModelT:
    """Validate raw fields (a dict from any producer) as ``model`` or raise :class:`InvalidJob`."""
    if not isinstance(fields, dict):
        raise InvalidJob(["job must be a JSON object of named fields"], ["job"])
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise invalid_job_from(exc, model) from None


def validate_job(fields: object) -> SetDefaultCardJob:
    """Validate raw fields (a dict from any producer) or raise :class:`InvalidJob`."""
    return validate_as(SetDefaultCardJob, fields)


def invalid_job_from(exc: ValidationError, model: type[BaseModel]) -> InvalidJob:
    """The :class:`InvalidJob` for ``model``'s validation errors, every problem named."""
    errors = exc.errors(include_input=False, include_url=False)
    described = [_describe(e, model.model_fields) for e in errors]
    return InvalidJob([m for _, m in described], [f for f, _ in described])


# --- the quick check: validate_job's "yes" for plain rows, without building a model ----------
#
# A migration scan validates up to millions of rows and needs only the decision. Each id
# field's pattern accepts exactly what its rule accepts for a plain ``str`` (cards.ids);
# anything else (other fields, other types, any rejection) goes to validate_job, which alone
# writes problem messages, so a "no" here is "ask validate_job", never a verdict.

_QUICK_PATTERNS: Final[dict[str, re.Pattern[str]]] = {
    name: rule.quick for name, rule in id_rules(SetDefaultCardJob).items()
}


def quick_pattern(field: str) -> re.Pattern[str] | None:
    """The pattern (use ``fullmatch``) that a plain string value of ``field`` passes
    :func:`validate_job` with, or None for a field the quick check does not decide."""
    return _QUICK_PATTERNS.get(field)


def accepts_quickly(fields: object) -> bool:
    """True only if :func:`validate_job` accepts ``fields``; False means "ask it".

    Decides a dict of plain strings over ``userId``, ``default_source``, ``job_id``
    and ``stripe_account`` exactly as :func:`validate_job` does; any other field or
    value type is left to it (False).
    """
    if type(fields) is not dict or "userId" not in fields or "default_source" not in fields:
        return False
    for name, value in fields.items():
        pattern = _QUICK_PATTERNS.get(name)
        # type() is: a str subclass may behave differently; validate_job decides it.
        if pattern is None or type(value) is not str or pattern.fullmatch(value) is None:
            return False
    return True

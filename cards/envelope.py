"""The result envelope ``{status, message, data}``: the seed API's response shape.

Every job ends with exactly one envelope in the result backend, with Celery state
SUCCESS, whether Stripe accepted the change or not, so consumers read one shape and
branch on ``status``. On success ``data`` is the customer object exactly as Stripe
returned it; on failure a small error object (``kind`` from :class:`ErrorKind`,
Stripe's ``code``/``param``/``request_id``, ``attempts``), documented in the README
and ``docs/internals.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final, TypedDict

__all__ = [
    "SUCCESS_MESSAGE",
    "Envelope",
    "ErrorData",
    "ErrorKind",
    "RetryCause",
    "failure",
    "success",
]

#: The seed API's success text, kept verbatim for its existing consumers.
SUCCESS_MESSAGE: Final = "Método de pago actualizado con éxito"


class ErrorKind(StrEnum):
    INVALID_JOB = "invalid_job"
    NO_SUCH_CUSTOMER = "no_such_customer"
    NOT_ATTACHED = "not_attached"
    INVALID_REQUEST = "invalid_request"
    CARD_DECLINED = "card_declined"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    SUPERSEDED = "superseded"
    STALE = "stale"
    MISCONFIGURED = "misconfigured"
    STRIPE_UNAVAILABLE = "stripe_unavailable"
    INTERNAL = "internal"


class RetryCause(Exception):
    """Why a job is waiting to retry (``"<reason>: <last error>"``): the retrying job's
    state info in the result backend, read by producers as this class. Never an answer."""


class ErrorData(TypedDict):
    kind: str
    code: str | None
    param: str | None
    request_id: str | None
    attempts: int


class Envelope(TypedDict):
    status: bool
    message: str
    data: dict[str, Any] | None


def success(customer: dict[str, Any]) -> Envelope:
    return {"status": True, "message": SUCCESS_MESSAGE, "data": customer}


def failure(
    message: str,
    kind: ErrorKind,
    *,
    code: str | None = None,
    param: str | None = None,
    request_id: str | None = None,
    attempts: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> Envelope:
    """A failure envelope; ``extra`` adds kind-specific fields (e.g. ``newer_job_id``)."""
    error: ErrorData = {
        "kind": kind.value,
        "code": code,
        "param": param,
        "request_id": request_id,
        "attempts": attempts,
    }
    return {"status": False, "message": message, "data": {**error, **(extra or {})}}

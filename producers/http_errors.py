"""Which HTTP status the gateway answers for a job's envelope: one table, one pure function.

A job ends with ``{status, message, data}``; when ``status`` is false,
``data["kind"]`` says what went wrong (:class:`cards.envelope.ErrorKind`). The
gateway answers with that envelope as the body and the status below, so an
HTTP client can branch on the status code alone:

- 4xx: the request cannot succeed as sent (fix it, or the customer's cards).
- 502: the service behind the gateway failed (worker misconfigured, or a bug).
- 503: Stripe stayed unavailable for the whole retry budget; try again later.

The gateway's own answers (401, 413, 504, ...) are named here too, so the
README's status table has one source.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

from cards.envelope import ErrorKind

__all__ = [
    "BAD_REQUEST",
    "CONFLICT",
    "FORBIDDEN",
    "GATEWAY_TIMEOUT",
    "NOT_FOUND",
    "PAYLOAD_TOO_LARGE",
    "STATUS_BY_KIND",
    "UNAUTHORIZED",
    "UNAVAILABLE",
    "error_body",
    "status_for",
]

STATUS_BY_KIND: Final[Mapping[ErrorKind, int]] = {
    ErrorKind.INVALID_JOB: HTTPStatus.BAD_REQUEST,
    ErrorKind.NOT_ATTACHED: HTTPStatus.BAD_REQUEST,
    ErrorKind.INVALID_REQUEST: HTTPStatus.BAD_REQUEST,
    ErrorKind.CARD_DECLINED: HTTPStatus.PAYMENT_REQUIRED,
    ErrorKind.NO_SUCH_CUSTOMER: HTTPStatus.NOT_FOUND,
    ErrorKind.IDEMPOTENCY_CONFLICT: HTTPStatus.CONFLICT,
    ErrorKind.SUPERSEDED: HTTPStatus.CONFLICT,
    ErrorKind.STALE: HTTPStatus.CONFLICT,
    ErrorKind.MISCONFIGURED: HTTPStatus.BAD_GATEWAY,
    ErrorKind.INTERNAL: HTTPStatus.BAD_GATEWAY,
    ErrorKind.STRIPE_UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
}
#: A kind this gateway does not know yet (a newer worker): the service behind failed.
UNKNOWN_KIND_STATUS: Final = HTTPStatus.BAD_GATEWAY

BAD_REQUEST: Final = HTTPStatus.BAD_REQUEST  # malformed JSON, wrong content type, bad field
UNAUTHORIZED: Final = HTTPStatus.UNAUTHORIZED  # no or unknown bearer API key
FORBIDDEN: Final = HTTPStatus.FORBIDDEN  # the key does not hold the route's scope
NOT_FOUND: Final = HTTPStatus.NOT_FOUND  # no such job for this key (or another tenant's)
CONFLICT: Final = HTTPStatus.CONFLICT  # the job_id is another request's
PAYLOAD_TOO_LARGE: Final = HTTPStatus.REQUEST_ENTITY_TOO_LARGE  # body over the limit
UNAVAILABLE: Final = HTTPStatus.SERVICE_UNAVAILABLE  # broker or result backend unreachable
GATEWAY_TIMEOUT: Final = HTTPStatus.GATEWAY_TIMEOUT  # ?wait= ran out; the job goes on


def status_for(envelope: Mapping[str, Any]) -> int:
    """The HTTP status for a finished job's envelope. Pure."""
    if envelope.get("status") is True:
        return HTTPStatus.OK
    data = envelope.get("data")
    kind = data.get("kind") if isinstance(data, Mapping) else None
    try:
        return STATUS_BY_KIND[ErrorKind(str(kind))]
    except ValueError:
        return UNKNOWN_KIND_STATUS


def error_body(message: str, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The body of every error the gateway itself answers: the envelope's shape."""
    return {"status": False, "message": message, "data": dict(data) if data is not None else None}

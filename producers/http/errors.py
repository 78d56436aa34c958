"""Which HTTP answer for which failure: the envelope status table and the gateway's own errors.

A finished job's envelope is the body, with the status :func:`status_for`
gives (from ``data["kind"]``). The gateway's own refusals (401, 413, 504, ...)
are :class:`GatewayError`, named here too, so the README's status table has one
source. Every error body has the envelope's shape ``{status, message, data}``;
nothing answers a traceback or FastAPI's 422.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cards.envelope import ErrorKind, failure
from cards.jobs import InvalidJob

__all__ = [
    "BAD_REQUEST",
    "CONFLICT",
    "FORBIDDEN",
    "GATEWAY_TIMEOUT",
    "NOT_FOUND",
    "PARAMETER_RULES",
    "PAYLOAD_TOO_LARGE",
    "STATUS_BY_KIND",
    "UNAUTHORIZED",
    "UNAVAILABLE",
    "GatewayError",
    "checked",
    "error_body",
    "install_error_handlers",
    "invalid",
    "job_id_taken",
    "status_for",
]

logger = logging.getLogger(__name__)

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

#: What a bad query parameter must be; FastAPI validates these, we word the message.
PARAMETER_RULES: Final[Mapping[str, str]] = {
    "wait": "wait must be a finite number of seconds, at least 0",
}


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


class GatewayError(Exception):
    """An answer other than the job's own: the gateway's status, message and data."""

    def __init__(
        self,
        status: int,
        message: str,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.data = data
        self.headers = dict(headers or {})


def invalid(exc: InvalidJob) -> GatewayError:
    """A job contract's refusal (its message names the field) as a 400."""
    return GatewayError(BAD_REQUEST, str(exc))


def checked(check: Callable[[], object]) -> None:
    """Run a field check from :mod:`cards.jobs`; its ``ValueError`` becomes a 400."""
    try:
        check()
    except ValueError as exc:
        raise GatewayError(BAD_REQUEST, f"invalid request: {exc}") from None


def job_id_taken(job_id: str) -> GatewayError:
    """The 409 for a job id claimed by another request (see :mod:`producers.http.ownership`)."""
    answer = failure(
        f"job_id {job_id} is already used by another request (another API key, other "
        "fields, or another kind of job); nothing was changed: send a new job_id",
        ErrorKind.IDEMPOTENCY_CONFLICT,
        param="job_id",
    )
    return GatewayError(CONFLICT, answer["message"], answer["data"])


def _parameter_message(exc: RequestValidationError) -> str:
    problems: list[str] = []
    for error in exc.errors():
        loc = error.get("loc") or ("request",)
        name = str(loc[-1])
        problem = PARAMETER_RULES.get(name, f"{name} is invalid")
        if problem not in problems:
            problems.append(problem)
    return "invalid request: " + "; ".join(problems)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every exception ``app`` raises with an envelope-shaped body."""

    async def gateway_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GatewayError)
        return JSONResponse(error_body(exc.message, exc.data), exc.status, headers=exc.headers)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse(error_body(_parameter_message(exc)), BAD_REQUEST)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = HTTPStatus(exc.status_code).phrase.lower()
        return JSONResponse(error_body(message), exc.status_code, headers=exc.headers)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("%s %s: unexpected error", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            error_body("internal error in the gateway"), HTTPStatus.INTERNAL_SERVER_ERROR
        )

    app.add_exception_handler(GatewayError, gateway_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)

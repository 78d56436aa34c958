"""The HTTP gateway's request and response shapes, as they appear in its OpenAPI schema.

Requests are *validated* by the job contracts (:mod:`cards.jobs`,
:mod:`cards.companion_jobs`), whose messages name the field and the rule; the
request models here only *describe* those rules, with the patterns and lengths
of the same id rules (:mod:`cards.ids`), so that the OpenAPI schema, and any
client generated from it, says the same thing. Response models describe every
body the gateway sends: all have the envelope's shape ``{status, message, data}``.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from cards.ids import (
    ACCOUNT,
    ASSIGN_SOURCE,
    CUSTOMER,
    DEFAULT_SOURCE,
    HTTP_URL_PATTERN,
    JOB_ID,
    MAX_CALLBACK_URL_LENGTH,
)

__all__ = [
    "ACCOUNT_PATTERN",
    "CUSTOMER_PATTERN",
    "JOB_ID_PATTERN",
    "AssignCardRequest",
    "CardAssigned",
    "CardsListed",
    "CustomerUpdated",
    "Failed",
    "Health",
    "InFlightCount",
    "JobStatus",
    "Queued",
    "Readiness",
    "SetDefaultCardRequest",
    "TimedOut",
    "responses",
    "tidy_openapi",
]

CUSTOMER_PATTERN: Final = CUSTOMER.pattern
DEFAULT_SOURCE_PATTERN: Final = DEFAULT_SOURCE.pattern
ASSIGN_SOURCE_PATTERN: Final = ASSIGN_SOURCE.pattern
ACCOUNT_PATTERN: Final = ACCOUNT.pattern
JOB_ID_PATTERN: Final = JOB_ID.pattern

_USER_ID = Field(
    pattern=CUSTOMER_PATTERN,
    max_length=CUSTOMER.max_length,
    description="The Stripe customer id.",
    examples=["cus_QRs9eKZ4xUzN2TP9"],
)
_JOB_ID = Field(
    default=None,
    pattern=JOB_ID_PATTERN,
    max_length=JOB_ID.max_length,
    description="The job's id and the root of its idempotency key; a UUID if omitted. "
    "Sending it again with the same API key's tenant and the same fields is the same job; "
    "anything else is a 409.",
)
_REQUESTED_AT = Field(
    default=None,
    description="When the caller asked; stamped if omitted. At most CARDS_MAX_CLOCK_SKEW_SECONDS "
    "in the future and CARDS_MAX_JOB_AGE_SECONDS in the past.",
)
_STRIPE_ACCOUNT = Field(
    default=None,
    pattern=ACCOUNT_PATTERN,
    max_length=ACCOUNT.max_length,
    description="Connected account, sent to Stripe as the Stripe-Account header.",
)


class SetDefaultCardRequest(BaseModel):
    """The seed's body, plus the job's optional fields."""

    model_config = ConfigDict(extra="forbid", regex_engine="python-re")

    userId: str = _USER_ID
    default_source: str = Field(
        pattern=DEFAULT_SOURCE_PATTERN,
        max_length=DEFAULT_SOURCE.max_length,
        description="card_… or src_… (becomes default_source) or pm_… (becomes "
        "invoice_settings.default_payment_method); must be attached to the customer.",
        examples=["card_1QRs9eKZ4xUzN2TPabcdefgh"],
    )
    job_id: str | None = _JOB_ID
    requested_at: AwareDatetime | None = _REQUESTED_AT
    stripe_account: str | None = _STRIPE_ACCOUNT
    callback_url: str | None = Field(
        default=None,
        max_length=MAX_CALLBACK_URL_LENGTH,
        json_schema_extra={"format": "uri", "pattern": HTTP_URL_PATTERN},
        description="An http(s) URL the result is delivered to.",
    )


class AssignCardRequest(BaseModel):
    """Attach a card to a customer from a token (``tok_…``) or a card source (``src_…``)."""

    model_config = ConfigDict(extra="forbid", regex_engine="python-re")

    userId: str = _USER_ID
    source: str = Field(
        pattern=ASSIGN_SOURCE_PATTERN,
        max_length=ASSIGN_SOURCE.max_length,
        description="A card token (tok_…) or card source (src_…).",
        examples=["tok_visa"],
    )
    job_id: str | None = _JOB_ID
    requested_at: AwareDatetime | None = _REQUESTED_AT
    stripe_account: str | None = _STRIPE_ACCOUNT


class ErrorData(BaseModel):
    """What went wrong with a job (see the README's table of kinds)."""

    kind: str
    code: str | None
    param: str | None
    request_id: str | None
    attempts: int


class JobHandle(BaseModel):
    job_id: str
    status_url: str = Field(description="GET it for the job's state and, once done, result.")


class Queued(BaseModel):
    """202: the job is queued; poll ``status_url``."""

    status: Literal[True]
    message: str
    data: JobHandle


class TimedOut(BaseModel):
    """504: ``?wait=`` ran out; the job goes on, poll ``status_url``."""

    status: Literal[False]
    message: str
    data: JobHandle


class Failed(BaseModel):
    """Any failure: the job's envelope (``data`` says why) or the gateway's (``data`` null)."""

    status: Literal[False]
    message: str
    data: ErrorData | None


class CustomerUpdated(BaseModel):
    """The seed's response: ``data`` is the customer exactly as Stripe returned it."""

    status: Literal[True]
    message: str = Field(examples=["Método de pago actualizado con éxito"])
    data: dict[str, Any]


class AssignedCard(BaseModel):
    cardId: str = Field(examples=["card_1QRs9eKZ4xUzN2TPabcdefgh"])
    card: dict[str, Any] = Field(description="The card as Stripe returned it.")


class CardAssigned(BaseModel):
    status: Literal[True]
    message: str
    data: AssignedCard


class CardsListed(BaseModel):
    """``data`` is the customer's cards as Stripe lists them (card_… and card src_…)."""

    status: Literal[True]
    message: str
    data: list[dict[str, Any]]


class JobState(BaseModel):
    job_id: str
    state: str = Field(
        description="queued, retrying, done, or another Celery state in lower case "
        "(running, failed, revoked)."
    )
    result: dict[str, Any] | None = Field(description="The job's envelope once it is done.")
    last_error: str | None = Field(
        default=None,
        description="While the job is retrying: why its last attempt did not finish, as "
        '"<reason>: <message>" (the reason as in cards_job_retries_total); else null. '
        "Carries no secret and no customer data.",
        examples=["server_error: Stripe server error (500)"],
    )


class JobStatus(BaseModel):
    status: Literal[True]
    message: str
    data: JobState


class Health(BaseModel):
    status: bool
    message: str
    data: None = None


class InFlightCount(BaseModel):
    in_flight: int
    max_in_flight: int


class Readiness(BaseModel):
    status: bool
    message: str
    data: InFlightCount


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, {"type": "null"}]`` as X: an optional query parameter is absent, not null."""
    options = schema.get("anyOf")
    if not isinstance(options, list):
        return schema
    kept = [o for o in options if o != {"type": "null"}]
    if len(kept) != 1:
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**kept[0], **rest}


def tidy_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's generated schema, less what this gateway never answers or accepts.

    Parameter errors answer 400 (``Failed``), never FastAPI's 422, and optional
    parameters are described without ``null``, which a query string cannot carry.
    """
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            operation.get("responses", {}).pop("422", None)
            for parameter in operation.get("parameters", []):
                parameter["schema"] = _without_null(parameter["schema"])
    components = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def responses(*statuses: int, ok: type | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route: its success model and the failures it may answer."""
    described: dict[int | str, dict[str, Any]] = {}
    if ok is not None:
        described[HTTPStatus.OK] = {"model": ok, "description": "The job is done and succeeded."}
    for status in statuses:
        model: type = Failed
        if status == HTTPStatus.ACCEPTED:
            model = Queued
        elif status == HTTPStatus.GATEWAY_TIMEOUT:
            model = TimedOut
        described[status] = {"model": model, "description": HTTPStatus(status).phrase}
    return described

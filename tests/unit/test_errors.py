"""Error classification, as a table: SDK exception in, meaning out."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import stripe

from cards.envelope import ErrorKind
from worker.errors import (
    CardDeclined,
    IdempotencyConflict,
    InvalidRequest,
    Misconfigured,
    NoSuchCustomer,
    NotAttached,
    PermanentError,
    StripeCallError,
    StripeConflict,
    StripeConnectionFailed,
    StripeLockTimeout,
    StripeRateLimited,
    StripeServerError,
    TransientError,
    classify,
)


def sdk_error(
    cls: type[stripe.StripeError],
    status: int | None,
    *,
    type_: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    message: str = "boom",
    headers: dict[str, str] | None = None,
) -> stripe.StripeError:
    body: dict[str, Any] = {"error": {"type": type_, "message": message}}
    if code:
        body["error"]["code"] = code
    if param:
        body["error"]["param"] = param
    all_headers = {"request-id": "req_123", **(headers or {})}
    if cls in (stripe.InvalidRequestError, stripe.CardError):
        return cls(message, param, code, None, status, body, all_headers)  # type: ignore[call-arg]
    return cls(message, None, status, body, all_headers)


TABLE: list[tuple[str, stripe.StripeError, type[StripeCallError]]] = [
    ("connection", stripe.APIConnectionError("reset"), StripeConnectionFailed),
    ("429 rate_limit", sdk_error(stripe.RateLimitError, 429, code="rate_limit"), StripeRateLimited),
    (
        "429 lock_timeout",
        sdk_error(stripe.RateLimitError, 429, code="lock_timeout"),
        StripeLockTimeout,
    ),
    (
        "409 in flight",
        sdk_error(stripe.APIError, 409, code="idempotency_key_in_use"),
        StripeConflict,
    ),
    ("500", sdk_error(stripe.APIError, 500, type_="api_error"), StripeServerError),
    ("503", sdk_error(stripe.APIError, 503, type_="api_error"), StripeServerError),
    (
        "404 no such customer",
        sdk_error(
            stripe.InvalidRequestError,
            404,
            code="resource_missing",
            param="id",
            message="No such customer: 'cus_x'",
        ),
        NoSuchCustomer,
    ),
    (
        "400 card not attached (by param)",
        sdk_error(
            stripe.InvalidRequestError,
            400,
            code="resource_missing",
            param="default_source",
            message="Customer cus_X does not have a linked source with ID card_X.",
        ),
        NotAttached,
    ),
    (
        "400 card not attached (by text only)",
        sdk_error(
            stripe.InvalidRequestError,
            400,
            message="Customer cus_X does not have a linked source with ID card_X.",
        ),
        NotAttached,
    ),
    (
        "400 payment method not attached",
        sdk_error(
            stripe.InvalidRequestError,
            400,
            code="resource_missing",
            param="invoice_settings[default_payment_method]",
            message="The customer does not have a payment method with the ID pm_1.",
        ),
        NotAttached,
    ),
    (
        "400 other",
        sdk_error(stripe.InvalidRequestError, 400, code="parameter_unknown"),
        InvalidRequest,
    ),
    (
        "402",
        sdk_error(stripe.CardError, 402, type_="card_error", code="card_declined"),
        CardDeclined,
    ),
    (
        "400 idempotency_error",
        sdk_error(stripe.IdempotencyError, 400, type_="idempotency_error"),
        IdempotencyConflict,
    ),
    ("401", sdk_error(stripe.AuthenticationError, 401), Misconfigured),
    ("403", sdk_error(stripe.PermissionError, 403), Misconfigured),
    (
        "400 with Stripe-Should-Retry: true",
        sdk_error(stripe.InvalidRequestError, 400, headers={"Stripe-Should-Retry": "true"}),
        StripeServerError,
    ),
    (
        "500 with Stripe-Should-Retry: false",
        sdk_error(stripe.APIError, 500, headers={"stripe-should-retry": "false"}),
        InvalidRequest,
    ),
    (
        "401 with Stripe-Should-Retry: true stays a configuration error",
        sdk_error(stripe.AuthenticationError, 401, headers={"Stripe-Should-Retry": "true"}),
        Misconfigured,
    ),
]


@pytest.mark.parametrize(
    ("exc", "expected"), [(e, c) for _, e, c in TABLE], ids=[t[0] for t in TABLE]
)
def test_classification_table(exc: stripe.StripeError, expected: type[StripeCallError]) -> None:
    assert type(classify(exc)) is expected


RETRYABLE = {
    StripeConnectionFailed,
    StripeRateLimited,
    StripeLockTimeout,
    StripeConflict,
    StripeServerError,
}


@pytest.mark.parametrize(
    ("exc", "expected"), [(e, c) for _, e, c in TABLE], ids=[t[0] for t in TABLE]
)
def test_retryable_exactly_when_transient(exc: stripe.StripeError, expected: type) -> None:
    meaning = classify(exc)
    assert isinstance(meaning, TransientError) == (expected in RETRYABLE)
    assert isinstance(meaning, PermanentError) == (expected not in RETRYABLE)


def test_only_server_errors_are_saved_under_the_key() -> None:
    saved = {
        type(classify(e)) for _, e, _ in TABLE if getattr(classify(e), "response_saved", False)
    }
    assert saved == {StripeServerError}


def test_stripe_details_are_carried() -> None:
    meaning = classify(
        sdk_error(
            stripe.InvalidRequestError,
            404,
            code="resource_missing",
            param="id",
            message="No such customer: 'cus_x'",
        )
    )
    assert (meaning.http_status, meaning.code, meaning.param, meaning.request_id) == (
        404,
        "resource_missing",
        "id",
        "req_123",
    )
    assert meaning.kind is ErrorKind.NO_SUCH_CUSTOMER
    assert meaning.message == "no such customer"


@pytest.mark.parametrize(
    ("param", "text"),
    [
        ("default_source", "card is not attached to this customer; assign it first"),
        (
            "invoice_settings[default_payment_method]",
            "payment method is not attached to this customer; attach it first",
        ),
    ],
)
def test_not_attached_messages_say_what_to_do(param: str, text: str) -> None:
    meaning = classify(
        sdk_error(stripe.InvalidRequestError, 400, code="resource_missing", param=param)
    )
    assert meaning.message == text


def test_a_connection_failure_names_the_network_error_under_it() -> None:
    try:
        try:
            raise httpx.ConnectError("[Errno -2] Name or service not known")
        except httpx.ConnectError as cause:
            raise stripe.APIConnectionError("Unexpected error communicating with Stripe") from cause
    except stripe.APIConnectionError as exc:
        meaning = classify(exc)
    assert isinstance(meaning, StripeConnectionFailed)
    assert meaning.message == (
        "no answer from Stripe (connection failed or timed out: "
        "ConnectError: [Errno -2] Name or service not known)"
    )


#: What a Stripe error's text may echo: the customer's email, name and card fingerprint.
PERSONAL = ("jane.doe@example.com", "Jane Doe", "Xt5EWLLDS7FJjR1c")
_PERSONAL_TEXT = "No such token; customer jane.doe@example.com (Jane Doe) card Xt5EWLLDS7FJjR1c"


@pytest.mark.parametrize(
    "exc",
    [
        sdk_error(stripe.RateLimitError, 429, code="rate_limit", message=_PERSONAL_TEXT),
        sdk_error(stripe.RateLimitError, 429, code="lock_timeout", message=_PERSONAL_TEXT),
        sdk_error(stripe.APIError, 409, message=_PERSONAL_TEXT),
        sdk_error(stripe.InvalidRequestError, 400, code="token_in_use", message=_PERSONAL_TEXT),
        sdk_error(stripe.APIError, 500, type_="api_error", message=_PERSONAL_TEXT),
        sdk_error(
            stripe.InvalidRequestError,
            400,
            message=_PERSONAL_TEXT,
            headers={"Stripe-Should-Retry": "true"},
        ),
        sdk_error(stripe.APIError, None, message=_PERSONAL_TEXT),
        stripe.APIConnectionError(_PERSONAL_TEXT),
    ],
    ids=["429", "lock_timeout", "409", "token_in_use", "500", "should-retry", "no-status", "conn"],
)
def test_a_retry_message_never_echoes_stripes_text(exc: stripe.StripeError) -> None:
    # A retrying job shows its transient message (`cards result`, the gateway's last_error).
    meaning = classify(exc)
    assert isinstance(meaning, TransientError)
    assert not any(word in meaning.message for word in PERSONAL), meaning.message


def test_misconfigured_message_never_contains_the_key() -> None:
    key = "sk_test_SECRETSECRET"
    meaning = classify(
        sdk_error(stripe.AuthenticationError, 401, message=f"Invalid API Key provided: {key}")
    )
    assert meaning.message.startswith("worker is misconfigured")
    assert key not in meaning.message


# --- against Stripe's vocabulary ----------------------------------------------------------
#
# Every error ``type`` Stripe's OpenAPI description lists (``api_errors.type``), and every
# ``code`` the calls we make (update and retrieve a customer, attach and list its sources,
# retrieve a PaymentMethod) can answer, from Stripe's error-code reference. Each row: the
# HTTP status Stripe answers it with, retry or not, and the start of the job's message.

RETRY, FINAL = True, False
#: (type, code, status, exception class, retried?, message start)
VOCABULARY: list[tuple[str, str | None, int, type[stripe.StripeError], bool, str]] = [
    ("api_error", None, 500, stripe.APIError, RETRY, "Stripe server error (500)"),
    ("api_error", None, 502, stripe.APIError, RETRY, "Stripe server error (502)"),
    ("card_error", "card_declined", 402, stripe.CardError, FINAL, "Stripe refused the card"),
    ("card_error", "expired_card", 402, stripe.CardError, FINAL, "Stripe refused the card"),
    ("card_error", "incorrect_cvc", 402, stripe.CardError, FINAL, "Stripe refused the card"),
    ("card_error", "incorrect_number", 402, stripe.CardError, FINAL, "Stripe refused the card"),
    ("card_error", "incorrect_zip", 402, stripe.CardError, FINAL, "Stripe refused the card"),
    ("card_error", "invalid_cvc", 402, stripe.CardError, FINAL, "Stripe refused the card"),
    ("card_error", "invalid_expiry_month", 402, stripe.CardError, FINAL, "Stripe refused the card"),
    ("card_error", "invalid_expiry_year", 402, stripe.CardError, FINAL, "Stripe refused the card"),
    ("card_error", "invalid_number", 402, stripe.CardError, FINAL, "Stripe refused the card"),
    ("card_error", "processing_error", 402, stripe.CardError, FINAL, "Stripe refused the card"),
    ("idempotency_error", None, 400, stripe.IdempotencyError, FINAL, "this job id was already"),
    ("invalid_request_error", "parameter_unknown", 400, stripe.InvalidRequestError, FINAL,
     "Stripe rejected the request"),
    ("invalid_request_error", "parameter_missing", 400, stripe.InvalidRequestError, FINAL,
     "Stripe rejected the request"),
    ("invalid_request_error", "parameter_invalid_empty", 400, stripe.InvalidRequestError, FINAL,
     "Stripe rejected the request"),
    ("invalid_request_error", "parameter_invalid_integer", 400, stripe.InvalidRequestError,
     FINAL, "Stripe rejected the request"),
    ("invalid_request_error", "parameter_invalid_string_blank", 400, stripe.InvalidRequestError,
     FINAL, "Stripe rejected the request"),
    ("invalid_request_error", "parameter_invalid_string_empty", 400, stripe.InvalidRequestError,
     FINAL, "Stripe rejected the request"),
    ("invalid_request_error", "parameters_exclusive", 400, stripe.InvalidRequestError, FINAL,
     "Stripe rejected the request"),
    ("invalid_request_error", "resource_missing", 404, stripe.InvalidRequestError, FINAL,
     "Stripe rejected the request"),
    ("invalid_request_error", "token_already_used", 400, stripe.InvalidRequestError, FINAL,
     "Stripe rejected the request"),
    ("invalid_request_error", "token_in_use", 400, stripe.InvalidRequestError, RETRY,
     "Stripe is using this token in another request"),
    ("invalid_request_error", "invalid_source_usage", 400, stripe.InvalidRequestError, FINAL,
     "Stripe rejected the request"),
    ("invalid_request_error", "livemode_mismatch", 400, stripe.InvalidRequestError, FINAL,
     "Stripe rejected the request"),
    ("invalid_request_error", "idempotency_key_in_use", 409, stripe.APIError, RETRY,
     "Stripe reports a concurrent request"),
    ("invalid_request_error", "rate_limit", 429, stripe.RateLimitError, RETRY,
     "Stripe rate limit reached"),
    ("invalid_request_error", "lock_timeout", 429, stripe.RateLimitError, RETRY,
     "Stripe lock timeout"),
    ("invalid_request_error", "account_invalid", 403, stripe.PermissionError, FINAL,
     "worker is misconfigured"),
    ("invalid_request_error", "api_key_expired", 401, stripe.AuthenticationError, FINAL,
     "worker is misconfigured"),
    ("invalid_request_error", "platform_api_key_expired", 401, stripe.AuthenticationError, FINAL,
     "worker is misconfigured"),
    ("invalid_request_error", "secret_key_required", 401, stripe.AuthenticationError, FINAL,
     "worker is misconfigured"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("type_", "code", "status", "cls", "retried", "message"),
    VOCABULARY,
    ids=[f"{t}/{c or '-'}/{s}" for t, c, s, *_ in VOCABULARY],
)
def test_stripe_vocabulary_is_classified(
    type_: str,
    code: str | None,
    status: int,
    cls: type[stripe.StripeError],
    retried: bool,
    message: str,
) -> None:
    meaning = classify(sdk_error(cls, status, type_=type_, code=code, message="Stripe says"))
    assert isinstance(meaning, TransientError) is retried
    assert meaning.message.startswith(message)
    if not retried:
        assert isinstance(meaning, PermanentError)


def test_every_error_type_in_stripes_description_has_a_row(stripe_spec: Any) -> None:
    types = set(stripe_spec.component("api_errors")["properties"]["type"]["enum"])
    assert types == {row[0] for row in VOCABULARY}

"""Stripe-shaped API errors.

Every refusal the emulator sends is a :class:`StripeError`, rendered as Stripe renders
errors: ``{"error": {"type", "code", "message", "param", "doc_url", "request_log_url"}}``,
``code``/``param``/``doc_url`` only when set. ``request_log_url`` names the request that
produced the error, so a replayed error keeps the original request's id. The
constructors carry Stripe's exact messages where they are known; the guesses are
listed in ``docs/emulator.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DOC_URL_BASE = "https://stripe.com/docs/error-codes/"
REQUEST_LOG_URL_BASE = "https://dashboard.stripe.com/test/logs/"
RATE_LIMIT_DOC = "https://stripe.com/docs/rate-limits"


class StripeError(Exception):
    """An error answer: HTTP status plus Stripe's error object."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.code = code
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})

    def body(self, request_id: str) -> dict[str, Any]:
        err: dict[str, Any] = {}
        if self.code is not None:
            err["code"] = self.code
            err["doc_url"] = DOC_URL_BASE + self.code.replace("_", "-")
        err["message"] = self.message
        if self.param is not None:
            err["param"] = self.param
        err["request_log_url"] = f"{REQUEST_LOG_URL_BASE}{request_id}"
        err["type"] = self.type
        return {"error": err}


def invalid_request(
    message: str, *, code: str | None = None, param: str | None = None, status: int = 400
) -> StripeError:
    return StripeError(status, "invalid_request_error", message, code=code, param=param)


def no_such(kind: str, object_id: str, *, param: str = "id") -> StripeError:
    """404 for a missing object, e.g. ``No such customer: 'cus_x'``."""
    return StripeError(
        404,
        "invalid_request_error",
        f"No such {kind}: '{object_id}'",
        code="resource_missing",
        param=param,
    )


def unknown_parameter(param: str) -> StripeError:
    return invalid_request(
        f"Received unknown parameter: {param}", code="parameter_unknown", param=param
    )


def missing_parameter(param: str) -> StripeError:
    return invalid_request(
        f"Missing required param: {param}.", code="parameter_missing", param=param
    )


def empty_parameter(param: str) -> StripeError:
    return invalid_request(
        f"You passed an empty string for '{param}'. We assume empty values are an attempt "
        f"to unset a parameter; however '{param}' cannot be unset. You should remove "
        f"'{param}' from your request or supply a non-empty value.",
        code="parameter_invalid_empty",
        param=param,
    )


def mask_key(key: str) -> str:
    """``sk_test_abcdefgh1234`` -> ``sk_test_****1234``; never the whole secret."""
    prefix = ""
    for candidate in ("sk_test_", "sk_live_", "rk_test_", "rk_live_", "pk_test_", "pk_live_"):
        if key.startswith(candidate):
            prefix = candidate
            break
    secret = key[len(prefix) :]
    tail = secret[-4:] if len(secret) > 8 else ""
    return f"{prefix}****{tail}"


def no_api_key() -> StripeError:
    return StripeError(
        401,
        "invalid_request_error",
        "You did not provide an API key. You need to provide your API key in the "
        "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
        "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, "
        "or we can help at https://support.stripe.com/.",
        headers={"WWW-Authenticate": 'Bearer realm="Stripe"'},
    )


def invalid_api_key(key: str) -> StripeError:
    return StripeError(
        401,
        "invalid_request_error",
        f"Invalid API Key provided: {mask_key(key)}",
        headers={"WWW-Authenticate": 'Bearer realm="Stripe"'},
    )


def permission_denied(key: str, account: str | None) -> StripeError:
    where = f" on account '{account}'" if account else ""
    return StripeError(
        403,
        "invalid_request_error",
        f"The provided key '{mask_key(key)}' does not have the required permissions for "
        f"this endpoint{where}. Having the 'rak_customer_write' permission would allow "
        "this request to continue.",
    )


def account_access_denied(account: str) -> StripeError:
    return StripeError(
        403,
        "invalid_request_error",
        f"The provided key does not have access to account '{account}' (or that account "
        "does not exist). Application access may have been revoked.",
        code="account_invalid",
    )


def rate_limited() -> StripeError:
    return StripeError(
        429,
        "invalid_request_error",
        f"Request rate limit exceeded. You can learn more about rate limits here {RATE_LIMIT_DOC}.",
        code="rate_limit",
    )


def lock_timeout(object_id: str) -> StripeError:
    return StripeError(
        429,
        "invalid_request_error",
        f"This object ({object_id}) cannot be accessed right now because another API "
        "request or Stripe process is currently accessing it. If you see this error "
        "intermittently, retry the request. If you see this error frequently and are "
        "making multiple concurrent requests to a single object, make your requests "
        f"serially or at a lower rate. See {RATE_LIMIT_DOC} for more information.",
        code="lock_timeout",
        headers={"Stripe-Should-Retry": "true"},
    )


def idempotency_key_in_use(key: str) -> StripeError:
    return StripeError(
        409,
        "invalid_request_error",
        "There is currently another in-progress request using this Idempotent Key "
        f"('{key}'); that probably means you submitted twice, and the other request is "
        "still going through. Please try again later.",
        code="idempotency_key_in_use",
    )


def idempotency_mismatch(key: str) -> StripeError:
    return StripeError(
        400,
        "idempotency_error",
        "Keys for idempotent requests can only be used with the same parameters they "
        f"were first used with. Try using a key other than '{key}' if you meant to "
        "execute a different request.",
    )


def idempotency_key_too_long() -> StripeError:
    return invalid_request(
        "Keys for idempotent requests can only be up to 255 characters long.",
        param="Idempotency-Key",
    )


def api_error() -> StripeError:
    return StripeError(
        500,
        "api_error",
        "An unknown error occurred while processing your request. Please retry, or "
        "contact us at https://support.stripe.com/ if the problem persists.",
    )


def unrecognized_url(method: str, path: str) -> StripeError:
    return invalid_request(
        f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
        "or we can help at https://support.stripe.com/.",
        status=404,
    )


def card_error(message: str, *, code: str, param: str) -> StripeError:
    return StripeError(402, "card_error", message, code=code, param=param)

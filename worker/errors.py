"""What a Stripe failure means for a job: one exception class per meaning.

:func:`classify` is a pure function from an exception of the ``stripe`` SDK to
one of the classes below: :class:`TransientError` (retry later, same job;
``response_saved`` says whether Stripe stored the answer under our idempotency
key) or :class:`PermanentError` (answer ``status: false`` now). Retried:
connection errors, timeouts, 429, 409, ``token_in_use`` and 5xx. Permanent:
400/404, 402, ``idempotency_error``; 401/403 mean the worker is misconfigured.
A ``Stripe-Should-Retry`` header overrides the status code. Rules: docs/worker.md.
"""

from __future__ import annotations

from typing import ClassVar, TypedDict

import stripe

from cards.envelope import ErrorKind

__all__ = [
    "CardDeclined",
    "IdempotencyConflict",
    "InvalidRequest",
    "Misconfigured",
    "NoApiKey",
    "NoSuchCustomer",
    "NotAttached",
    "PermanentError",
    "StripeCallError",
    "StripeConflict",
    "StripeConnectionFailed",
    "StripeLockTimeout",
    "StripeRateLimited",
    "StripeServerError",
    "TransientError",
    "classify",
]

#: Params that Stripe names when the default being set is not attached.
NOT_ATTACHED_PARAMS = frozenset({"default_source", "invoice_settings[default_payment_method]"})
#: Texts seen from Stripe for the same failure (stripe-java #550 and others).
NOT_ATTACHED_TEXTS = ("does not have a linked source", "does not have a payment method")


class _Details(TypedDict):
    http_status: int | None
    code: str | None
    param: str | None
    request_id: str | None


class StripeCallError(Exception):
    """A failed Stripe call, carrying what Stripe said about it."""

    kind: ClassVar[ErrorKind]
    #: Short reason, used for retry metrics and the "gave up" message.
    reason: ClassVar[str]
    #: No final answer came for the request sent: Stripe may still apply it later
    #: (so the customer stays locked until the job's retry, under the same key, ends it).
    outcome_unknown: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        code: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.code = code
        self.param = param
        self.request_id = request_id


class PermanentError(StripeCallError):
    """Retrying cannot help; the job ends with ``status: false``."""

    reason = "permanent"


class NoSuchCustomer(PermanentError):
    kind = ErrorKind.NO_SUCH_CUSTOMER


class NotAttached(PermanentError):
    kind = ErrorKind.NOT_ATTACHED


class InvalidRequest(PermanentError):
    kind = ErrorKind.INVALID_REQUEST


class CardDeclined(PermanentError):
    kind = ErrorKind.CARD_DECLINED


class IdempotencyConflict(PermanentError):
    kind = ErrorKind.IDEMPOTENCY_CONFLICT


class Misconfigured(PermanentError):
    """401/403: the worker's key is wrong or lacks permission. Every job will fail."""

    kind = ErrorKind.MISCONFIGURED


class NoApiKey(Misconfigured):
    """The worker has no Stripe key: no call was made. Every job will fail."""


class TransientError(StripeCallError):
    """Worth retrying later with the same job."""

    kind = ErrorKind.STRIPE_UNAVAILABLE
    reason = "transient"
    #: Stripe stored this response under the idempotency key (it does so for
    #: 5xx once the endpoint started executing), so the same key would replay
    #: it forever. The next attempt must reconcile and use a new key.
    response_saved: ClassVar[bool] = False


class StripeServerError(TransientError):
    reason = "server_error"
    response_saved = True


class StripeRateLimited(TransientError):
    reason = "rate_limit"


class StripeLockTimeout(TransientError):
    reason = "lock_timeout"


class StripeConflict(TransientError):
    """409: another request with the same key is in flight; nothing was saved."""

    reason = "conflict"
    outcome_unknown = True


class StripeConnectionFailed(TransientError):
    """No answer (reset, timeout). Stripe may have applied and saved the call,
    so the same key is reused: a replay then returns the saved outcome."""

    reason = "connection"
    outcome_unknown = True


def _header(exc: stripe.StripeError, name: str) -> str | None:
    headers = exc.headers or {}
    for key, value in headers.items():
        if key.lower() == name.lower():
            return str(value)
    return None


def _not_attached_message(param: str | None, stripe_text: str) -> str:
    if param == "invoice_settings[default_payment_method]" or "payment method" in stripe_text:
        return "payment method is not attached to this customer; attach it first"
    return "card is not attached to this customer; assign it first"


def _network_cause(exc: BaseException) -> str:
    """The network error under the SDK's, e.g. ``ConnectError: [Errno 111] Connection refused``."""
    cause = exc.__cause__ or exc.__context__
    if cause is None:
        return "no detail"
    text = " ".join(str(cause).split())[:160]
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


def classify(exc: stripe.StripeError) -> StripeCallError:
    """Map an SDK exception to what it means for the job. Pure: no I/O."""
    status = exc.http_status
    error = exc.error
    code = (error.code if error is not None else None) or exc.code
    param = error.param if error is not None else None
    stripe_type = error.type if error is not None else None
    details: _Details = {
        "http_status": status,
        "code": code,
        "param": param,
        "request_id": exc.request_id,
    }
    stripe_text = (error.message if error is not None else None) or "no message"

    should_retry = _header(exc, "Stripe-Should-Retry")
    if should_retry == "false" and not isinstance(
        exc, stripe.AuthenticationError | stripe.PermissionError
    ):
        return InvalidRequest(
            f"Stripe refused the request and asked not to retry it ({status}): {stripe_text}",
            **details,
        )

    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        what = "API key was rejected" if status == 401 else "API key lacks permission"
        return Misconfigured(
            f"worker is misconfigured: Stripe says its {what} ({status})", **details
        )
    if isinstance(exc, stripe.APIConnectionError):
        return StripeConnectionFailed(
            f"no answer from Stripe (connection failed or timed out: {_network_cause(exc)})"
        )
    if isinstance(exc, stripe.RateLimitError) or status == 429:
        if code == "lock_timeout":
            return StripeLockTimeout("Stripe lock timeout on this customer", **details)
        return StripeRateLimited("Stripe rate limit reached", **details)
    if should_retry == "true":
        return StripeServerError(f"Stripe asked for a retry ({status})", **details)
    if isinstance(exc, stripe.IdempotencyError) or stripe_type == "idempotency_error":
        return IdempotencyConflict(
            "this job id was already used for a different request; use a new job id",
            **details,
        )
    if status == 409:
        return StripeConflict("Stripe reports a concurrent request for this job", **details)
    if code == "token_in_use":
        return StripeConflict(
            "Stripe is using this token in another request at the moment", **details
        )
    if status is not None and status >= 500:
        return StripeServerError(f"Stripe server error ({status})", **details)
    if isinstance(exc, stripe.CardError) or status == 402:
        return CardDeclined(f"Stripe refused the card: {stripe_text}", **details)
    if isinstance(exc, stripe.InvalidRequestError):
        # Stripe's code and param for "not attached" are unconfirmed, so the
        # observed message texts are matched too.
        if param in NOT_ATTACHED_PARAMS or any(t in stripe_text for t in NOT_ATTACHED_TEXTS):
            return NotAttached(_not_attached_message(param, stripe_text), **details)
        if code == "resource_missing" and stripe_text.startswith("No such customer"):
            return NoSuchCustomer("no such customer", **details)
        return InvalidRequest(f"Stripe rejected the request: {stripe_text}", **details)
    if status is None:
        # A transient message is shown while the job retries (RetryCause, the gateway's
        # last_error): it names the error's class, never Stripe's text.
        return StripeConnectionFailed(
            f"Stripe call failed without a response ({type(exc).__name__})"
        )
    return InvalidRequest(f"unexpected Stripe answer ({status}): {stripe_text}", **details)

"""For services that asked for a callback: verify what arrives, and ask how delivery went.

A receiver checks every callback before trusting it::

    from producers import CallbackVerificationError, verify_callback

    try:
        payload = verify_callback(request.headers, request.body, secret="whsec_…")
    except CallbackVerificationError:
        return 400
    # payload == {"job_id": …, "status": …, "message": …, "data": …}

Pass the body exactly as received (bytes), before any JSON parsing: the
signature covers those bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cards.deliveries import CallbackStatus, DeliveryStore
from cards.settings import get_settings
from cards.signatures import InvalidSignature, verify

__all__ = ["CallbackStatus", "CallbackVerificationError", "get_callback_status", "verify_callback"]

#: The one exception :func:`verify_callback` raises (a ``ValueError``).
CallbackVerificationError = InvalidSignature


def verify_callback(headers: Mapping[str, str], body: bytes | str, secret: str) -> dict[str, Any]:
    """The callback's payload, once its Standard Webhooks signature checks out.

    ``headers`` needs ``webhook-id``, ``webhook-timestamp`` and
    ``webhook-signature`` (any case); ``secret`` is one of the worker's
    ``CARDS_CALLBACK_SECRETS`` (``whsec_…``). Raises
    :class:`CallbackVerificationError` when a header is missing, no signature
    matches (tampered body, wrong secret), or the timestamp is more than five
    minutes from now (a replay).
    """
    return verify(headers, body, secret)


def get_callback_status(job_id: str, *, redis_url: str | None = None) -> CallbackStatus | None:
    """How the job's callback delivery went, or None if it has no record.

    ``{"state": "pending" | "delivered" | "failed", "attempts", "last_error",
    "last_status", "delivered_at", "updated_at"}``; None when the job had no
    callback_url, has not finished yet, or its record expired with its result.
    ``redis_url`` defaults to where workers keep job state
    (``CARDS_STATE_REDIS_URL``, else the broker).
    """
    settings = get_settings()
    store = DeliveryStore.from_url(
        redis_url or settings.job_state_url, settings.result_expires_seconds
    )
    return store.read(job_id)

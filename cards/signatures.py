"""Callback signatures, the Standard Webhooks way, through the ``standardwebhooks`` package.

The worker signs every callback it sends; receivers verify with :func:`verify`
(``producers.verify_callback``). Three headers carry it: ``webhook-id`` (the job id,
the same on every attempt), ``webhook-timestamp`` (refused more than five minutes from
the receiver's clock) and ``webhook-signature`` (one ``v1,`` HMAC-SHA256 per configured
secret, so a rotation signs with old and new). Secrets are ``whsec_`` and base64 of at
least 24 random bytes. Each header in full: ``docs/internals.md``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from standardwebhooks import Webhook, WebhookVerificationError

__all__ = [
    "SECRET_PREFIX",
    "InvalidSignature",
    "check_secret",
    "sign",
    "verify",
]

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - a prefix, not a secret
#: Standard Webhooks recommends secrets of 24 to 64 random bytes.
MIN_SECRET_BYTES: Final = 24


class InvalidSignature(ValueError):
    """A callback whose signature, timestamp or headers do not check out."""


def check_secret(secret: str) -> None:
    """``ValueError`` (without the secret in it) unless ``secret`` is a usable ``whsec_`` key."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f'a callback secret must start with "{SECRET_PREFIX}"')
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"a callback secret must be {SECRET_PREFIX} then base64") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"a callback secret must hold at least {MIN_SECRET_BYTES} bytes")


def sign(msg_id: str, timestamp: datetime, body: str, secrets: Sequence[str]) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``, signed with every secret."""
    if not secrets:
        raise ValueError("no callback secret to sign with")
    signatures = " ".join(Webhook(secret).sign(msg_id, timestamp, body) for secret in secrets)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signatures,
    }


def verify(headers: Mapping[str, str], body: bytes | str, secret: str) -> dict[str, Any]:
    """The callback's JSON body once its signature and timestamp check out.

    Raises :class:`InvalidSignature` for every failure: missing headers, no
    signature made with ``secret``, a timestamp more than five minutes off, a
    body that is not a JSON object, or a malformed secret.
    """
    try:
        payload = Webhook(secret).verify(body, {str(k): str(v) for k, v in headers.items()})
    except Exception as exc:
        # The package raises its own error for most failures, but ValueError,
        # binascii.Error or UnicodeDecodeError for malformed input.
        raise InvalidSignature(f"callback signature not verified: {_reason(exc)}") from None
    if not isinstance(payload, dict):
        raise InvalidSignature("callback signature not verified: body is not a JSON object")
    return payload


def _reason(exc: Exception) -> str:
    if isinstance(exc, WebhookVerificationError) and str(exc):
        return str(exc).lower()
    if isinstance(exc, json.JSONDecodeError):
        return "body is not JSON"
    return "malformed headers, body or secret"

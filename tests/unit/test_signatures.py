"""Standard Webhooks signatures: round trip, rotation, and every refusal of verify_callback."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from cards.deliveries import callback_body
from cards.settings import Settings
from cards.signatures import check_secret, sign
from producers import CallbackVerificationError, verify_callback

ENVELOPE = {"status": True, "message": "Método de pago actualizado con éxito", "data": {"id": "c"}}


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


OLD, NEW = new_secret(), new_secret()


def signed(secrets: list[str], when: datetime | None = None) -> tuple[dict[str, str], bytes]:
    body = callback_body("job-1", ENVELOPE)
    headers = sign("job-1", when or datetime.now(UTC), body, secrets)
    return headers, body.encode()


def test_round_trip() -> None:
    headers, body = signed([NEW])
    assert headers["webhook-id"] == "job-1"
    assert headers["webhook-signature"].startswith("v1,")
    payload = verify_callback(headers, body, NEW)
    assert payload == {"job_id": "job-1", **ENVELOPE}
    # Header names in any case, body as bytes or text.
    upper = {k.upper(): v for k, v in headers.items()}
    assert verify_callback(upper, body.decode(), NEW) == payload


def test_signature_is_the_reference_implementation() -> None:
    headers, body = signed([NEW])
    timestamp = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
    expected = Webhook(NEW).sign("job-1", timestamp, body.decode())
    assert headers["webhook-signature"] == expected


def test_rotation_signs_with_every_secret_and_each_verifies() -> None:
    headers, body = signed([OLD, NEW])
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verify_callback(headers, body, OLD)["job_id"] == "job-1"
    assert verify_callback(headers, body, NEW)["job_id"] == "job-1"
    with pytest.raises(CallbackVerificationError, match="no matching signature"):
        verify_callback(headers, body, new_secret())


def test_tampered_body_is_refused() -> None:
    headers, body = signed([NEW])
    tampered = body.replace(b'"status":true', b'"status":false')
    assert tampered != body
    with pytest.raises(CallbackVerificationError, match="no matching signature"):
        verify_callback(headers, tampered, NEW)


def test_old_and_future_timestamps_are_refused() -> None:
    old_headers, body = signed([NEW], datetime.now(UTC) - timedelta(minutes=6))
    with pytest.raises(CallbackVerificationError, match="too old"):
        verify_callback(old_headers, body, NEW)
    future_headers, body = signed([NEW], datetime.now(UTC) + timedelta(minutes=6))
    with pytest.raises(CallbackVerificationError, match="too new"):
        verify_callback(future_headers, body, NEW)
    # A fresh timestamp on an old signature is a forgery.
    replayed = {**old_headers, "webhook-timestamp": signed([NEW])[0]["webhook-timestamp"]}
    with pytest.raises(CallbackVerificationError):
        verify_callback(replayed, body, NEW)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda h: {k: v for k, v in h.items() if k != "webhook-signature"},
        lambda h: {k: v for k, v in h.items() if k != "webhook-id"},
        lambda h: {**h, "webhook-id": "job-2"},
        lambda h: {**h, "webhook-timestamp": "yesterday"},
        lambda h: {**h, "webhook-signature": "garbage"},
        lambda h: {**h, "webhook-signature": "v1,not base64!!"},
        lambda h: {**h, "webhook-signature": "v2," + h["webhook-signature"][3:]},
    ],
)
def test_malformed_headers_raise_the_one_error(mangle) -> None:  # type: ignore[no-untyped-def]
    headers, body = signed([NEW])
    with pytest.raises(CallbackVerificationError):
        verify_callback(mangle(headers), body, NEW)


def test_non_object_body_and_bad_secret_raise_the_one_error() -> None:
    body = json.dumps([1, 2])
    headers = sign("job-1", datetime.now(UTC), body, [NEW])
    with pytest.raises(CallbackVerificationError, match="not a JSON object"):
        verify_callback(headers, body, NEW)
    with pytest.raises(CallbackVerificationError):
        verify_callback(headers, body, "whsec_%%%")
    assert issubclass(CallbackVerificationError, ValueError)


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("abc", 'must start with "whsec_"'),
        ("whsec_***", "then base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "at least 24 bytes"),
    ],
)
def test_secret_format(secret: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_secret(secret)
    check_secret(NEW)


def test_settings_never_echo_a_secret() -> None:
    bad = "whsec_" + base64.b64encode(b"a-short-but-secret-value").decode()[:-4]
    with pytest.raises(ValueError, match="CARDS_CALLBACK_SECRETS entry 2") as error:
        Settings(callback_secrets=f"{NEW},{bad}")
    assert bad not in str(error.value) and NEW not in str(error.value)
    settings = Settings(callback_secrets=f" {OLD} , {NEW} ", flower_basic_auth="admin:pw")
    assert settings.callback_secret_values == (OLD, NEW)
    assert OLD not in repr(settings) and "admin:pw" not in repr(settings)
    with pytest.raises(ValueError, match="user:password"):
        Settings(flower_basic_auth="admin")

"""The callback task's own decisions, called directly: no secret, no send; a 200, delivered."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator

import fakeredis
import pytest

from cards.deliveries import DeliveryStore
from cards.envelope import success
from cards.settings import Settings
from harness.receiver import CallbackReceiver, run_receiver
from producers import verify_callback
from tests.unit import netguard
from worker import callbacks
from worker.webhook import CallbackSender

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
ENVELOPE = dict(success({"id": "cus_1", "email": "ann@example.com"}))


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> DeliveryStore:
    fake = DeliveryStore(fakeredis.FakeRedis(), ttl_seconds=600)
    monkeypatch.setattr(callbacks.wiring, "deliveries", lambda: fake)
    return fake


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    with run_receiver() as running:
        yield running


def use_settings(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setattr(callbacks, "get_settings", lambda: settings)
    sender = CallbackSender(settings.callback_allowlist, timeout=5)
    monkeypatch.setattr(callbacks.wiring, "callback_sender", lambda: sender)


def test_without_a_secret_nothing_is_sent_and_the_record_says_why(
    monkeypatch: pytest.MonkeyPatch, store: DeliveryStore, receiver: CallbackReceiver
) -> None:
    use_settings(monkeypatch, Settings(callback_allowed_hosts=f"127.0.0.1:{receiver.port}"))
    result = callbacks.deliver_callback("job-1", receiver.url("/hook"), ENVELOPE, time.time())
    assert result == {
        "job_id": "job-1",
        "delivered": False,
        "attempts": 0,
        "last_error": callbacks.MISCONFIGURED,
    }
    record = store.read("job-1")
    assert record is not None
    assert (record["state"], record["attempts"]) == ("failed", 0)
    assert record["last_error"] is not None and record["last_error"].startswith("misconfigured:")
    assert receiver.received("/hook") == []


def test_a_200_is_delivered_signed_and_recorded(
    monkeypatch: pytest.MonkeyPatch, store: DeliveryStore, receiver: CallbackReceiver
) -> None:
    use_settings(
        monkeypatch,
        Settings(callback_secrets=SECRET, callback_allowed_hosts=f"127.0.0.1:{receiver.port}"),
    )
    result = callbacks.deliver_callback("job-2", receiver.url("/hook"), ENVELOPE, time.time())
    assert result == {"job_id": "job-2", "delivered": True, "attempts": 1, "last_error": None}
    [request] = receiver.received("/hook")
    assert verify_callback(request.headers, request.body, SECRET) == {"job_id": "job-2", **ENVELOPE}
    record = store.read("job-2")
    assert record is not None and record["state"] == "delivered"
    assert record["last_status"] == 200 and record["delivered_at"] is not None


def test_a_refused_destination_fails_at_once_without_sending(
    monkeypatch: pytest.MonkeyPatch, store: DeliveryStore
) -> None:
    network = netguard.install(monkeypatch)
    use_settings(monkeypatch, Settings(callback_secrets=SECRET))
    result = callbacks.deliver_callback("job-3", "http://10.0.0.1/x", ENVELOPE, time.time())
    assert result["delivered"] is False and result["attempts"] == 1
    assert result["last_error"] == (
        "refused: callback_url host resolves to a private address (10.0.0.1)"
    )
    assert network.connects == []

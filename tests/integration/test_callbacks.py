"""Signed callbacks end to end: session worker → ``cards.deliver_callback`` → a loopback receiver.

The receiver is a real HTTP server on 127.0.0.1 (allowlisted in the session
worker's settings, and here for the producer). Refused destinations are
private or metadata addresses written as IP literals: the producer refuses
them without any lookup, and the worker refuses them before opening a socket
(``tests/unit/test_webhook.py`` proves that against the socket layer).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.result import AsyncResult

from cards.deliveries import CallbackStatus, callback_task_id
from cards.jobs import TASK_NAME
from cards.settings import get_settings
from harness.processes import RedisServer, wait_for
from harness.receiver import CallbackReceiver, Received, Reply, run_receiver
from producers import (
    InvalidJob,
    enqueue_set_default_card,
    get_callback_status,
    get_result,
    verify_callback,
)
from stripe_emulator.process import EmulatorProcess
from tests.integration.conftest import (
    CALLBACK_MAX_ATTEMPTS,
    CALLBACK_SECRETS,
    RECEIVER_ALLOWED,
    RECEIVER_PORT,
    applied_writes,
    cards_cli,
)
from worker.idempotency import idempotency_key

RESULT_TIMEOUT = 30
#: Long enough for CALLBACK_MAX_ATTEMPTS attempts one second apart, with slack.
DELIVERY_TIMEOUT = 30

pytestmark = pytest.mark.usefixtures("worker", "producer_allows_loopback")


@pytest.fixture(scope="module")
def receiver() -> Iterator[CallbackReceiver]:
    with run_receiver(RECEIVER_PORT) as running:
        yield running


@pytest.fixture
def producer_allows_loopback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process enqueues too: its settings must allowlist the receiver, as the worker's do."""
    monkeypatch.setenv("CARDS_CALLBACK_ALLOWED_HOSTS", RECEIVER_ALLOWED)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def path() -> str:
    return f"/hooks/{uuid.uuid4().hex}"


def final_status(redis_server: RedisServer, job_id: str) -> CallbackStatus:
    """The delivery record once it is no longer pending."""
    found: list[CallbackStatus] = []

    def settled() -> bool:
        status = get_callback_status(job_id, redis_url=redis_server.url())
        if status is not None and status["state"] != "pending":
            found.append(status)
            return True
        return False

    wait_for(settled, DELIVERY_TIMEOUT, f"the callback of job {job_id} to settle")
    return found[-1]


def run_job(app: Celery, customer: dict[str, Any], callback_url: str) -> tuple[str, dict[str, Any]]:
    job_id = enqueue_set_default_card(
        customer["id"], customer["cards"][1], callback_url=callback_url, app=app
    )
    return job_id, dict(get_result(job_id, timeout=RESULT_TIMEOUT, app=app))


def assert_signed_for(request: Received, job_id: str, envelope: dict[str, Any]) -> None:
    assert request.headers["webhook-id"] == job_id
    assert request.headers["content-type"] == "application/json"
    assert len(request.headers["webhook-signature"].split(" ")) == len(CALLBACK_SECRETS)
    for secret in CALLBACK_SECRETS:  # either side of the rotation verifies
        assert verify_callback(request.headers, request.body, secret) == {
            "job_id": job_id,
            **envelope,
        }


def test_finished_job_posts_its_signed_envelope(
    app: Celery,
    redis_server: RedisServer,
    receiver: CallbackReceiver,
    customers: list[dict[str, Any]],
) -> None:
    where = path()
    job_id, envelope = run_job(app, customers[0], receiver.url(where))
    assert envelope["status"] is True
    assert "callback" not in envelope
    status = final_status(redis_server, job_id)
    assert (status["state"], status["attempts"], status["last_status"]) == ("delivered", 1, 200)
    assert status["last_error"] is None and status["delivered_at"] is not None
    [request] = receiver.received(where)
    assert_signed_for(request, job_id, envelope)
    # The delivery task's own result: what Flower shows, no customer data.
    delivery: dict[str, Any] = AsyncResult(callback_task_id(job_id), app=app).get(
        timeout=RESULT_TIMEOUT
    )
    assert delivery == {"job_id": job_id, "delivered": True, "attempts": 1, "last_error": None}


def test_receiver_unavailable_twice_then_delivered_on_the_third_attempt(
    app: Celery,
    emulator: EmulatorProcess,
    redis_server: RedisServer,
    receiver: CallbackReceiver,
    customers: list[dict[str, Any]],
) -> None:
    where = path()
    receiver.script(where, [503, Reply(503, {"retry-after": "1"}), 200])
    job_id, envelope = run_job(app, customers[1], receiver.url(where))
    status = final_status(redis_server, job_id)
    assert (status["state"], status["attempts"], status["last_status"]) == ("delivered", 3, 200)
    requests = receiver.received(where)
    assert len(requests) == 3
    for request in requests:
        assert_signed_for(request, job_id, envelope)
    # Retrying the callback never retried the Stripe call.
    assert applied_writes(emulator, idempotency_key(job_id)) == 1


def test_gone_stops_after_one_attempt(
    app: Celery,
    redis_server: RedisServer,
    receiver: CallbackReceiver,
    customers: list[dict[str, Any]],
) -> None:
    where = path()
    receiver.script(where, [410, 200])
    job_id, _ = run_job(app, customers[2], receiver.url(where))
    status = final_status(redis_server, job_id)
    assert (status["state"], status["attempts"], status["last_status"]) == ("failed", 1, 410)
    assert status["last_error"] == "gone (HTTP 410): the receiver asked to stop"
    delivery: dict[str, Any] = AsyncResult(callback_task_id(job_id), app=app).get(
        timeout=RESULT_TIMEOUT
    )
    assert delivery["delivered"] is False and delivery["attempts"] == 1
    assert len(receiver.received(where)) == 1


def test_redirect_is_not_followed(
    app: Celery,
    redis_server: RedisServer,
    receiver: CallbackReceiver,
    customers: list[dict[str, Any]],
) -> None:
    where, elsewhere = path(), path()
    receiver.script(where, [Reply(302, {"location": receiver.url(elsewhere)})])
    job_id, _ = run_job(app, customers[3], receiver.url(where))
    status = final_status(redis_server, job_id)
    assert (status["state"], status["attempts"], status["last_status"]) == ("failed", 1, 302)
    assert status["last_error"] == "redirect not followed (HTTP 302)"
    assert len(receiver.received(where)) == 1
    assert receiver.received(elsewhere) == []


def test_failed_delivery_leaves_the_job_result_alone(
    app: Celery,
    emulator: EmulatorProcess,
    redis_server: RedisServer,
    receiver: CallbackReceiver,
    customers: list[dict[str, Any]],
) -> None:
    where = path()
    receiver.script(where, [500])
    job_id, envelope = run_job(app, customers[0], receiver.url(where))
    status = final_status(redis_server, job_id)
    assert status["state"] == "failed"
    assert status["attempts"] == CALLBACK_MAX_ATTEMPTS
    assert (
        status["last_error"] == f"gave up after {CALLBACK_MAX_ATTEMPTS} attempts (last: HTTP 500)"
    )
    assert len(receiver.received(where)) == CALLBACK_MAX_ATTEMPTS
    assert dict(get_result(job_id, timeout=0, app=app)) == envelope
    assert envelope["status"] is True
    assert applied_writes(emulator, idempotency_key(job_id)) == 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://10.0.0.1/x", "callback_url host resolves to a private address (10.0.0.1)"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "callback_url host resolves to a cloud metadata address (169.254.169.254)",
        ),
        ("http://2130706433:6379/", "callback_url host resolves to a loopback address (127.0.0.1)"),
        ("http://user:pw@example.com/", "callback_url must not contain credentials"),
    ],
)
def test_producer_refuses_private_destinations(
    app: Celery,
    redis_server: RedisServer,
    customers: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    message: str,
) -> None:
    monkeypatch.setenv("CARDS_CALLBACK_ALLOWED_HOSTS", "")  # not even the receiver
    get_settings.cache_clear()
    job_id = f"refused-{uuid.uuid4().hex}"
    with pytest.raises(InvalidJob) as refused:
        enqueue_set_default_card(
            customers[0]["id"], customers[0]["cards"][1], job_id=job_id, callback_url=url, app=app
        )
    assert str(refused.value) == f"invalid job: {message}"
    assert refused.value.fields == ["callback_url"]
    assert AsyncResult(job_id, app=app).state == "PENDING"  # nothing was enqueued


def test_worker_refuses_private_destinations_sent_past_the_producer(
    app: Celery,
    emulator: EmulatorProcess,
    redis_server: RedisServer,
    customers: list[dict[str, Any]],
) -> None:
    """A raw Celery client skips the producer's check; the worker's refuses before connecting."""
    customer = customers[1]
    job_id = f"raw-{uuid.uuid4().hex}"
    app.send_task(
        TASK_NAME,
        kwargs={
            "userId": customer["id"],
            "default_source": customer["cards"][1],
            "callback_url": "http://10.0.0.1/x",
        },
        task_id=job_id,
    )
    envelope = get_result(job_id, timeout=RESULT_TIMEOUT, app=app)
    assert envelope["status"] is True  # the job stands, whatever happens to its callback
    status = final_status(redis_server, job_id)
    assert (status["state"], status["attempts"], status["last_status"]) == ("failed", 1, None)
    assert status["last_error"] == (
        "refused: callback_url host resolves to a private address (10.0.0.1)"
    )
    assert applied_writes(emulator, idempotency_key(job_id)) == 1


def test_invalid_job_gets_no_callback(
    app: Celery, redis_server: RedisServer, receiver: CallbackReceiver
) -> None:
    where = path()
    job_id = f"invalid-{uuid.uuid4().hex}"
    app.send_task(
        TASK_NAME,
        kwargs={"userId": "usr_1", "default_source": "card_1", "callback_url": receiver.url(where)},
        task_id=job_id,
    )
    envelope = get_result(job_id, timeout=RESULT_TIMEOUT, app=app)
    assert envelope["data"] is not None and envelope["data"]["kind"] == "invalid_job"
    # A callback would have been recorded as pending before the job's result was stored.
    assert get_callback_status(job_id, redis_url=redis_server.url()) is None
    assert receiver.received(where) == []


def test_cli_result_shows_the_callback_beside_the_envelope(
    app: Celery,
    redis_server: RedisServer,
    receiver: CallbackReceiver,
    customers: list[dict[str, Any]],
) -> None:
    job_id, envelope = run_job(app, customers[2], receiver.url(path()))
    final_status(redis_server, job_id)
    shown = cards_cli(redis_server.url(), "result", job_id)
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert view["callback"]["state"] == "delivered"
    assert view["callback"]["attempts"] == 1
    assert {k: v for k, v in view.items() if k != "callback"} == envelope

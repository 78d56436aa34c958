"""What task events may show: job ids, status and message; and the delivery record."""

from __future__ import annotations

import fakeredis
import pytest
from celery.utils.saferepr import saferepr

from cards.deliveries import DeliveryStore, callback_body
from cards.envelope import ErrorKind, failure, success
from cards.redaction import (
    HIDDEN,
    batch_reprs,
    event_reprs,
    finished_event,
    summarize_envelope_repr,
)

CUSTOMER = {
    "id": "cus_1",
    "email": "ann@example.com",
    "name": "Ann O'Neil",
    "phone": "+15555550100",
}


@pytest.mark.parametrize(
    ("result", "shown"),
    [
        (
            saferepr(success(CUSTOMER), 1024),
            "{'status': True, 'message': 'Método de pago actualizado con éxito'}",
        ),
        (
            saferepr(failure('Stripe refused the card: it\'s "lost"', ErrorKind.CARD_DECLINED)),
            "{'status': False, 'message': 'Stripe refused the card: it\\'s \"lost\"'}",
        ),
        (success(CUSTOMER), "{'status': True, 'message': 'Método de pago actualizado con éxito'}"),
        # Truncated by Celery's resultrepr_maxsize: what is left of the message, nothing else.
        (saferepr(success(CUSTOMER), 30), "{'status': True, 'message': 'Mé...'}"),
        ("{'data': {'email': 'ann@example.com'}, 'status': True}", HIDDEN),
        ("'a string result'", HIDDEN),
        ({"email": "ann@example.com"}, HIDDEN),
        (None, HIDDEN),
    ],
)
def test_succeeded_events_show_status_and_message_only(result: object, shown: str) -> None:
    summary = summarize_envelope_repr(result)
    assert summary == shown
    for value in CUSTOMER.values():
        assert value not in summary or value == "cus_1"


@pytest.mark.parametrize(
    ("result", "event", "shown", "exception"),
    [
        (
            saferepr(success(CUSTOMER), 1024),
            "task-succeeded",
            "{'status': True, 'message': 'Método de pago actualizado con éxito'}",
            None,
        ),
        (
            saferepr(failure("no such customer", ErrorKind.NO_SUCH_CUSTOMER, attempts=1)),
            "task-failed",
            "{'status': False, 'message': 'no such customer'}",
            "no_such_customer: no such customer",
        ),
        (
            failure("worker is misconfigured: no key", ErrorKind.MISCONFIGURED),
            "task-failed",
            "{'status': False, 'message': 'worker is misconfigured: no key'}",
            "misconfigured: worker is misconfigured: no key",
        ),
        # Truncated before the kind: still a failure, kind unknown.
        (
            saferepr(failure("no such customer", ErrorKind.NO_SUCH_CUSTOMER), 40),
            "task-failed",
            "{'status': False, 'message': 'no such...'}",
            "failed: no such...",
        ),
        ("{'data': {'email': 'ann@example.com'}}", "task-succeeded", HIDDEN, None),
    ],
)
def test_finished_event_reports_a_false_status_as_failed(
    result: object, event: str, shown: str, exception: str | None
) -> None:
    kind, fields = finished_event({"result": result, "runtime": 0.5})
    assert (kind, fields["result"], fields.get("exception")) == (event, shown, exception)
    assert fields["runtime"] == 0.5


def test_batch_reprs_name_the_migration_and_the_row_count() -> None:
    assert batch_reprs("b-1", "m1", 50)["kwargsrepr"] == (
        "{'job_id': 'b-1', 'migration_id': 'm1', 'rows': 50}"
    )


def test_event_reprs_name_the_job_only() -> None:
    assert event_reprs("job-1") == {"argsrepr": "()", "kwargsrepr": "{'job_id': 'job-1'}"}


def test_callback_body_is_the_envelope_and_the_job_id() -> None:
    body = callback_body("job-1", success(CUSTOMER))
    assert body.startswith('{"job_id":"job-1","status":true,"message":"Método de pago')


def test_delivery_record_round_trip_and_pending_never_overwrites() -> None:
    store = DeliveryStore(fakeredis.FakeRedis(), ttl_seconds=100)
    assert store.read("job-1") is None
    store.mark_pending("job-1", 10.0)
    assert store.read("job-1") == {
        "state": "pending",
        "attempts": 0,
        "last_error": None,
        "last_status": None,
        "delivered_at": None,
        "updated_at": 10.0,
    }
    store.record(
        "job-1",
        {
            "state": "delivered",
            "attempts": 3,
            "last_error": None,
            "last_status": 200,
            "delivered_at": 12.5,
            "updated_at": 12.5,
        },
    )
    store.mark_pending("job-1", 20.0)  # a redelivered job queues its callback again
    record = store.read("job-1")
    assert record is not None
    assert (record["state"], record["attempts"], record["last_status"]) == ("delivered", 3, 200)
    assert 0 < store._redis.ttl("cards:callback:job-1") <= 100

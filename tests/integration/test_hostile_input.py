"""Hostile input, sent raw to a real worker: never a crash, a retry storm or a Stripe call.

Hypothesis generates task kwargs of any JSON shape (wrong types, nulls, strings
up to 1 MB, unicode and control characters, extra and missing fields, ids with
the right prefix but forbidden characters) and sends them with ``send_task``,
past the producer's validation. Raw broker messages that are not protocol-2
task messages, not JSON, or not JSON at all, go in through kombu.
CARDS_FUZZ_EXAMPLES sets how many generated inputs are tried (default 300).
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from celery import Celery
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from kombu import Producer

from cards.jobs import TASK_NAME, InvalidJob, validate_job
from harness.processes import CeleryWorker
from producers import enqueue_set_default_card, get_result
from stripe_emulator.process import EmulatorProcess
from tests.integration.conftest import stripe_calls

EXAMPLES = int(os.environ.get("CARDS_FUZZ_EXAMPLES", "300"))
FIELDS = ["userId", "default_source", "job_id", "requested_at", "stripe_account", "callback_url"]
PREFIXES = ["cus_", "card_", "src_", "pm_", "acct_"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
forbidden_ids = st.builds(
    lambda prefix, rest: prefix + rest,
    st.sampled_from(PREFIXES),
    st.text(min_size=1, max_size=30).filter(lambda t: not (t.isascii() and t.isalnum())),
)
huge_strings = st.builds(
    lambda prefix, char, n: prefix + char * n,
    st.sampled_from(["", *PREFIXES]),
    st.characters(),
    st.integers(min_value=256, max_value=1_000_000),
)
field_values = json_values | forbidden_ids | huge_strings
kwargs_strategy = st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=20), field_values, max_size=8
)

tried: set[str] = set()


def is_valid(kwargs: dict[str, Any]) -> bool:
    try:
        validate_job(kwargs)
    except InvalidJob:
        return False
    return True


def assert_clear_refusal(envelope: dict[str, Any]) -> None:
    assert envelope["status"] is False
    message = envelope["message"]
    assert message.startswith("invalid job: ")
    assert "Traceback" not in message
    assert len(message) < 2000
    assert envelope["data"]["kind"] == "invalid_job"
    assert envelope["data"]["attempts"] == 0


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(kwargs=kwargs_strategy)
def test_generated_kwargs_end_in_a_clear_refusal(
    kwargs: dict[str, Any], app: Celery, emulator: EmulatorProcess, worker: CeleryWorker
) -> None:
    assume(not is_valid(kwargs))
    tried.add(json.dumps(kwargs, sort_keys=True, default=str))
    before = stripe_calls(emulator)
    result = app.send_task(TASK_NAME, kwargs=kwargs)
    assert_clear_refusal(dict(get_result(result.id, timeout=60, app=app)))
    assert stripe_calls(emulator) == before
    assert worker.alive


def test_enough_distinct_inputs_were_tried() -> None:
    """Runs after the property test above (same module, in order)."""
    print(f"fuzz: {len(tried)} distinct kwargs tried")
    assert len(tried) >= min(EXAMPLES, 300) // 2


PROTOCOL_HEADERS = {
    "lang": "py",
    "task": TASK_NAME,
    "retries": 0,
    "eta": None,
    "expires": None,
    "argsrepr": "",
    "kwargsrepr": "",
    "origin": "fuzz",
}
SHAPES: dict[str, tuple[bytes, str, str | None]] = {
    # name: (body, content type, expected message; None: refused without an envelope)
    "not JSON": (b"{not json", "application/json", None),
    "pickle": (b"\x80\x04N.", "application/x-python-serialize", None),
    "unknown content type": (b"<job/>", "application/xml", None),
    "null body": (b"null", "application/json", "the message body must be [args, kwargs, embed]"),
    "number body": (b"42", "application/json", "the message body must be [args, kwargs, embed]"),
    "object body": (
        b'{"userId": "cus_1"}',
        "application/json",
        "the message body must be [args, kwargs, embed]",
    ),
    "short list": (b"[[]]", "application/json", "the message body must be [args, kwargs, embed]"),
    "kwargs list": (
        b"[[], [1, 2], {}]",
        "application/json",
        "kwargs must be a JSON object of named fields",
    ),
    "args string": (b'["x", {}, {}]', "application/json", "args must be a JSON array"),
    "a field named self": (
        b'[[], {"self": 1, "userId": "cus_1"}, {}]',
        "application/json",
        "kwargs must not name a field 'self'",
    ),
    "embed list": (
        b"[[], {}, []]",
        "application/json",
        "the message's options (embed) must be a JSON object",
    ),
}


def test_malformed_broker_messages_are_refused_and_the_queue_keeps_flowing(
    app: Celery,
    emulator: EmulatorProcess,
    worker: CeleryWorker,
    customers: list[dict[str, Any]],
) -> None:
    before = stripe_calls(emulator)
    ids: dict[str, str] = {}
    with app.connection_for_write() as connection:
        producer = Producer(connection)
        for name, (body, content_type, _) in SHAPES.items():
            task_id = str(uuid.uuid4())
            ids[name] = task_id
            producer.publish(
                body,
                routing_key="cards",
                exchange="",
                content_type=content_type,
                content_encoding="binary",
                headers={**PROTOCOL_HEADERS, "id": task_id, "root_id": task_id},
            )
        no_id = dict(PROTOCOL_HEADERS)
        producer.publish(
            b"[[], {}, {}]",
            routing_key="cards",
            exchange="",
            content_type="application/json",
            content_encoding="utf-8",
            headers=no_id,
        )

    # The queue still flows, and the worker is still up.
    customer = customers[0]
    good = enqueue_set_default_card(customer["id"], customer["cards"][1], app=app)
    assert get_result(good, timeout=30, app=app)["status"] is True
    assert worker.alive
    assert stripe_calls(emulator) == before + 1

    for name, (_, _, expected) in SHAPES.items():
        if expected is None:
            continue
        envelope = dict(get_result(ids[name], timeout=30, app=app))
        assert_clear_refusal(envelope)
        assert envelope["message"] == f"invalid job: {expected}", name

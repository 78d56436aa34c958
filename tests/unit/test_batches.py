"""The bulk batch contract and the in-place wait, as pure functions."""

from __future__ import annotations

import base64
import json
from typing import Any

import fakeredis
import pytest

from cards.batches import BATCH_TASK_NAME, MAX_BATCH_ROWS, validate_batch
from cards.envelope import success
from cards.jobs import InvalidJob
from harness.queues import message_rows
from worker.batches import BatchGuard, run_in_place
from worker.ordering import AppliedRequest, CustomerGuard
from worker.pipeline import RetryLater


def _rows(count: int) -> list[dict[str, Any]]:
    return [
        {"userId": "cus_a", "default_source": "card_b", "job_id": f"m:{i}"} for i in range(count)
    ]


def test_a_batch_is_its_rows() -> None:
    rows = _rows(3)
    assert validate_batch((), {"jobs": rows}) == rows


@pytest.mark.parametrize(
    ("args", "fields", "problem"),
    [
        ((1,), {"jobs": _rows(1)}, "send the batch as keyword arguments"),
        ((), {}, "jobs must be a non-empty JSON array"),
        ((), {"jobs": None}, "jobs must be a non-empty JSON array"),
        ((), {"jobs": {"a": 1}}, "jobs must be a non-empty JSON array"),
        ((), {"jobs": _rows(MAX_BATCH_ROWS + 1)}, f"at most {MAX_BATCH_ROWS} rows"),
        ((), {"jobs": [*_rows(1), "x"]}, "jobs[1] must be a JSON object"),
        ((), {"jobs": [{"userId": "cus_a"}]}, "jobs[0].job_id is required"),
        ((), {"jobs": [{"job_id": 7}]}, "jobs[0].job_id is required"),
        ((), {"jobs": [{"job_id": "-bad id"}]}, "jobs[0].job_id must be letters"),
        ((), {"jobs": [{"job_id": "x" * 200}]}, "jobs[0].job_id must be at most"),
        ((), {"jobs": [*_rows(2), _rows(1)[0]]}, "jobs[2].job_id repeats"),
        ((), {"jobs": _rows(1), "callback_url": "x"}, "only the fields 'jobs' and 'migration_id'"),
    ],
)
def test_a_broken_batch_is_refused_naming_the_problem(
    args: tuple[Any, ...], fields: dict[str, Any], problem: str
) -> None:
    with pytest.raises(InvalidJob) as refused:
        validate_batch(args, fields)
    assert problem in str(refused.value)


def test_waits_in_place_for_the_budget_and_the_customer_lock() -> None:
    answers: list[Any] = [
        RetryLater(1, "rate_limiter"),
        RetryLater(2, "customer_busy"),
        success({"id": "cus_a"}),
    ]
    slept: list[float] = []
    assert run_in_place(lambda: answers.pop(0), slept.append) == success({"id": "cus_a"})
    assert slept == [1, 2]


def test_a_stripe_retry_is_not_waited_in_place() -> None:
    slept: list[float] = []
    outcome = run_in_place(lambda: RetryLater(4, "server_error"), slept.append)
    assert outcome == RetryLater(4, "server_error")
    assert slept == []


def test_the_in_place_wait_is_bounded() -> None:
    slept: list[float] = []
    outcome = run_in_place(lambda: RetryLater(3, "customer_busy"), slept.append, max_wait=10)
    assert outcome == RetryLater(3, "customer_busy")
    assert slept == [3, 3, 3]


def _message(task: str, kwargs: dict[str, Any]) -> bytes:
    body = base64.b64encode(json.dumps([[], kwargs, {}]).encode()).decode()
    return json.dumps({"body": body, "headers": {"task": task, "id": "x"}}).encode()


def test_a_queued_batch_counts_its_rows() -> None:
    assert message_rows(_message(BATCH_TASK_NAME, {"jobs": _rows(7)})) == 7
    assert message_rows(_message("cards.set_default_card", _rows(1)[0])) == 1
    assert message_rows(b"not json") == 0


def _guard(server: fakeredis.FakeRedis) -> CustomerGuard:
    return CustomerGuard(server, lock_seconds=5, max_job_age_seconds=3600)


def test_a_batch_takes_its_customers_locks_up_front_and_releases_them_at_close() -> None:
    server = fakeredis.FakeRedis()
    outsider = _guard(server)
    batch = BatchGuard(_guard(server), ["-:cus_a", "-:cus_b"])
    assert outsider.enter("-:cus_a") == (None, None)  # held by the batch
    token, newest = batch.enter("-:cus_a")
    assert token is not None and newest is None
    batch.leave("-:cus_a", token, AppliedRequest(10.0, "m:2"))
    assert outsider.enter("-:cus_a") == (None, None)  # still held until the batch closes
    batch.close()  # cus_b was never used: released too
    token_a, newest_a = outsider.enter("-:cus_a")
    assert token_a is not None and newest_a == AppliedRequest(10.0, "m:2")
    assert outsider.enter("-:cus_b")[0] is not None


def test_a_customer_twice_in_a_batch_is_released_as_soon_as_it_is_left() -> None:
    server = fakeredis.FakeRedis()
    batch = BatchGuard(_guard(server), ["-:cus_a", "-:cus_a"])
    token, _ = batch.enter("-:cus_a")
    assert token is not None
    assert batch.enter("-:cus_a") == (None, None)  # the other row waits, as usual
    batch.leave("-:cus_a", token, AppliedRequest(10.0, "m:2"))
    second, newest = batch.enter("-:cus_a")
    assert second is not None and newest == AppliedRequest(10.0, "m:2")
    batch.leave("-:cus_a", second)
    batch.close()
    assert _guard(server).enter("-:cus_a")[0] is not None


def test_a_lock_held_elsewhere_is_entered_again_when_the_row_runs() -> None:
    server = fakeredis.FakeRedis()
    outsider = _guard(server)
    held, _ = outsider.enter("-:cus_a")
    assert held is not None
    batch = BatchGuard(_guard(server), ["-:cus_a"])
    assert batch.enter("-:cus_a") == (None, None)
    outsider.leave("-:cus_a", held)
    token, _ = batch.enter("-:cus_a")
    assert token is not None
    batch.leave("-:cus_a", token)
    batch.close()
    assert outsider.enter("-:cus_a")[0] is not None


def test_a_batch_row_without_an_answer_parks_its_customer_for_its_retry() -> None:
    server = fakeredis.FakeRedis()
    batch = BatchGuard(_guard(server), ["-:cus_a"])
    token, _ = batch.enter("-:cus_a", "m:2")
    assert token is not None
    batch.park("-:cus_a", token, "m:2", 30)
    batch.close()  # a parked customer is not released with the batch
    assert _guard(server).enter("-:cus_a", "m:3") == (None, None)
    again = BatchGuard(_guard(server), ["-:cus_a"])  # the row's retry, in a later batch
    assert again.enter("-:cus_a", "m:2")[0] is not None

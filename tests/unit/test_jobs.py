"""The job contract: what passes, what is refused, and how the refusal reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cards.deliveries import callback_task_id
from cards.jobs import (
    InvalidJob,
    SetDefaultCardJob,
    TargetField,
    accepts_quickly,
    check_job_id,
    check_requested_at,
    validate_job,
)
from worker.idempotency import idempotency_key

GOOD = {"userId": "cus_QRs9eKZ4xUzN2TP9", "default_source": "card_1QRs9eKZ4xUzN2TPabcdefgh"}


def refusal(fields: Any) -> str:
    with pytest.raises(InvalidJob) as caught:
        validate_job(fields)
    return str(caught.value)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("card_1QRs9eKZ4xUzN2TPabcdefgh", TargetField.DEFAULT_SOURCE),
        ("src_1ABC", TargetField.DEFAULT_SOURCE),
        ("pm_1ABCdef", TargetField.DEFAULT_PAYMENT_METHOD),
    ],
)
def test_accepts_card_source_and_payment_method(source: str, target: TargetField) -> None:
    job = validate_job({**GOOD, "default_source": source})
    assert job.default_source == source
    assert job.target is target


def test_accepts_every_optional_field() -> None:
    job = validate_job(
        {
            **GOOD,
            "job_id": "mig-42:row-7",
            "requested_at": "2026-11-26T08:00:00+00:00",
            "stripe_account": "acct_1ABC",
            "callback_url": "https://hooks.example.com/cards",
        }
    )
    assert job.job_id == "mig-42:row-7"
    assert job.requested_at == datetime(2026, 11, 26, 8, tzinfo=UTC)
    assert job.stripe_account == "acct_1ABC"
    assert str(job.callback_url) == "https://hooks.example.com/cards"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"userId": "usr_123"}, 'userId must start with "cus_"'),
        ({"userId": "cus_"}, 'userId must be "cus_" followed by letters and digits only'),
        ({"userId": "cus_abc-def"}, 'userId must be "cus_" followed by letters and digits only'),
        ({"userId": "cus_abc\x00"}, 'userId must be "cus_" followed by letters and digits only'),
        ({"userId": "cus_ábc"}, 'userId must be "cus_" followed by letters and digits only'),
        ({"userId": "cus_１２３"}, 'userId must be "cus_" followed by letters and digits only'),
        ({"userId": "cus_" + "a" * 252}, "userId must be at most 255 characters"),
        ({"userId": "cus_" + "a" * 1_000_000}, "userId must be at most 255 characters"),
        ({"userId": 123}, "userId must be a string"),
        ({"userId": None}, "userId must be a string"),
        ({"userId": ["cus_1"]}, "userId must be a string"),
        (
            {"default_source": "tok_visa"},
            'default_source must start with "card_" or "src_" or "pm_"',
        ),
        ({"default_source": "card_"}, 'default_source must be "card_" followed by letters'),
        ({"default_source": "pm_x y"}, 'default_source must be "pm_" followed by letters'),
        ({"default_source": 4242}, "default_source must be a string"),
        ({"stripe_account": "cus_1"}, 'stripe_account must start with "acct_"'),
        ({"job_id": "a" * 129}, "job_id must be at most 128 characters"),
        ({"job_id": "-leading"}, "job_id must be letters, digits and _ . : - only"),
        ({"job_id": "with space"}, "job_id must be letters, digits and _ . : - only"),
        ({"requested_at": "yesterday"}, "requested_at must be an ISO 8601 date-time"),
        ({"requested_at": "2026-11-26T08:00:00"}, "requested_at must include a time zone"),
        ({"callback_url": "ftp://example.com/x"}, "callback_url must be an http or https URL"),
        ({"callback_url": "not a url"}, "callback_url must be a valid URL"),
        ({"callback_url": 12}, "callback_url must be a string URL"),
    ],
)
def test_refusal_names_field_and_rule(change: dict[str, Any], message: str) -> None:
    assert message in refusal({**GOOD, **change})


def test_huge_value_is_not_echoed() -> None:
    text = refusal({**GOOD, "userId": "cus_" + "x" * 1_000_000})
    assert len(text) < 200


@pytest.mark.parametrize("missing", ["userId", "default_source"])
def test_required_fields(missing: str) -> None:
    fields = dict(GOOD)
    del fields[missing]
    assert f"{missing} is required" in refusal(fields)


def test_unknown_field_is_named_with_a_suggestion() -> None:
    text = refusal({"userId": GOOD["userId"], "defaultSource": "card_1"})
    assert 'unknown field "defaultSource" (did you mean "default_source"?)' in text
    assert "default_source is required" in text


def test_unknown_field_name_is_quoted_safely() -> None:
    text = refusal({**GOOD, "x\n" * 500: 1})
    assert "\n" not in text
    assert len(text) < 200


@pytest.mark.parametrize("fields", [None, [], "cus_1", 42, ["userId", "cus_1"]])
def test_non_object_job(fields: Any) -> None:
    assert "job must be a JSON object of named fields" in refusal(fields)


def test_every_problem_is_reported_and_fields_listed() -> None:
    with pytest.raises(InvalidJob) as caught:
        validate_job({"userId": "x", "default_source": "y"})
    assert caught.value.fields == ["userId", "default_source"]
    assert len(caught.value.problems) == 2


def test_stamped_fills_job_id_and_time_but_keeps_given_ones() -> None:
    stamped = validate_job(GOOD).stamped()
    assert stamped.job_id is not None and len(stamped.job_id) == 36
    assert stamped.requested_at is not None and stamped.requested_at.tzinfo is not None
    given = validate_job({**GOOD, "job_id": "j1"}).stamped()
    assert given.job_id == "j1"


def test_task_kwargs_round_trip_through_json() -> None:
    job = validate_job(
        {**GOOD, "requested_at": "2026-11-26T08:00:00Z", "callback_url": "http://127.0.0.1:9/x"}
    ).stamped()
    kwargs = job.to_task_kwargs()
    assert all(isinstance(v, str) for v in kwargs.values())
    assert SetDefaultCardJob.model_validate(kwargs) == job


# ------------------------------------------------ ids derived from a job id never collide


@pytest.mark.parametrize("job_id", ["X:g1", "X:g10", "a.b:g0", "X:callback", "mig:7:callback"])
def test_a_job_id_cannot_end_like_a_derived_id(job_id: str) -> None:
    """``X:g1`` was job X's generation-1 idempotency key, ``X:callback`` its callback task."""
    assert "reserved" in refusal({**GOOD, "job_id": job_id})
    assert not accepts_quickly({**GOOD, "job_id": job_id})


@pytest.mark.parametrize("job_id", ["X:g", "X:gx1", "X:G1", "callback", "X:callbacks", "g1"])
def test_look_alikes_of_derived_ids_are_job_ids(job_id: str) -> None:
    assert validate_job({**GOOD, "job_id": job_id}).job_id == job_id
    assert accepts_quickly({**GOOD, "job_id": job_id})


@example(first="X", second="X:g1", generations=(1, 0))
@example(first="X", second="X:callback", generations=(0, 0))
@given(
    first=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:g-]{0,20}", fullmatch=True),
    second=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:g-]{0,20}", fullmatch=True),
    generations=st.tuples(st.integers(0, 12), st.integers(0, 12)),
)
def test_no_valid_job_id_names_another_jobs_derived_ids(
    first: str, second: str, generations: tuple[int, int]
) -> None:
    ids = []
    for job_id in (first, second):
        try:
            ids.append(check_job_id(job_id))
        except ValueError:
            return
    if first == second:
        return
    one, other = generations
    assert idempotency_key(first, one) != idempotency_key(second, other)
    assert callback_task_id(first) != second and callback_task_id(second) != first


# ------------------------------------------------------------ requested_at is bounded

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("requested_at", "problem"),
    [
        (NOW, None),
        (NOW + timedelta(seconds=300), None),  # within the clock skew
        (NOW - timedelta(seconds=3600), None),
        (NOW + timedelta(seconds=301), "requested_at must not be more than 300 s in the future"),
        (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), "in the future"),
        (NOW - timedelta(seconds=7201), "requested_at must not be more than 7200 s in the past"),
    ],
)
def test_requested_at_is_bounded(requested_at: datetime, problem: str | None) -> None:
    def check() -> None:
        check_requested_at(requested_at, NOW, max_age_seconds=7200, max_skew_seconds=300)

    if problem is None:
        check()
    else:
        with pytest.raises(ValueError, match=problem):
            check()

"""Idempotency keys, backoff and the give-up rule: pure functions."""

from __future__ import annotations

import pytest

from cards.envelope import SUCCESS_MESSAGE, ErrorKind, failure, success
from cards.settings import Settings
from worker.idempotency import idempotency_key
from worker.retry_policy import RetryPolicy


def test_key_is_a_function_of_job_id_and_generation() -> None:
    assert idempotency_key("job-1") == idempotency_key("job-1", 0) == "cards-sdc:job-1"
    assert idempotency_key("job-1", 2) == "cards-sdc:job-1:g2"
    assert idempotency_key("job-2") != idempotency_key("job-1")
    assert len(idempotency_key("j" * 128, 99)) <= 255
    with pytest.raises(ValueError, match="generation"):
        idempotency_key("job-1", -1)


def test_countdown_grows_exponentially_and_is_capped() -> None:
    policy = RetryPolicy(
        max_attempts=20, backoff_seconds=2, backoff_max_seconds=30, window_seconds=3600
    )
    for attempt in range(1, 15):
        ceiling = min(30, 2 * 2 ** (attempt - 1))
        draws = {policy.countdown(attempt) for _ in range(200)}
        assert min(draws) >= 1
        assert max(draws) <= ceiling
    assert len({policy.countdown(6) for _ in range(200)}) > 5  # jittered


def test_gives_up_on_attempts_or_window() -> None:
    policy = RetryPolicy(
        max_attempts=3, backoff_seconds=1, backoff_max_seconds=60, window_seconds=100
    )
    assert not policy.gives_up(2, first_attempt_at=0, now=10, countdown=5)
    assert policy.gives_up(3, first_attempt_at=0, now=10, countdown=5)
    assert policy.gives_up(1, first_attempt_at=0, now=90, countdown=20)


def test_settings_keep_countdowns_below_the_visibility_timeout() -> None:
    with pytest.raises(ValueError, match="at most half"):
        Settings(retry_backoff_max_seconds=2000, visibility_timeout_seconds=3600)
    with pytest.raises(ValueError, match="less than 86400"):
        Settings(retry_window_seconds=86400)


def test_api_key_from_file_and_never_in_repr(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "key"  # type: ignore[operator]
    path.write_text("sk_test_FROMFILE\n")
    settings = Settings(stripe_api_key_file=path)
    assert settings.stripe_api_key is not None
    assert settings.stripe_api_key.get_secret_value() == "sk_test_FROMFILE"
    assert "sk_test_FROMFILE" not in repr(settings)


def test_envelope_shapes() -> None:
    assert success({"id": "cus_1"}) == {
        "status": True,
        "message": SUCCESS_MESSAGE,
        "data": {"id": "cus_1"},
    }
    assert failure(
        "no such customer", ErrorKind.NO_SUCH_CUSTOMER, code="resource_missing", attempts=1
    ) == {
        "status": False,
        "message": "no such customer",
        "data": {
            "kind": "no_such_customer",
            "code": "resource_missing",
            "param": None,
            "request_id": None,
            "attempts": 1,
        },
    }

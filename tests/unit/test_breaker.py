"""The Stripe breaker's decisions, and what it does to a consumer (a recording stand-in)."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from cards.redaction import calls_for_a_probe
from worker.breaker import Action, Breaker, next_action


@pytest.mark.parametrize(
    ("is_open", "cause", "action"),
    [
        (False, None, Action.STAY),
        (False, "no key", Action.OPEN),
        (True, "no key", Action.STAY),
        (True, None, Action.CLOSE),
    ],
)
def test_next_action(is_open: bool, cause: str | None, action: Action) -> None:
    assert next_action(is_open, cause) is action


@pytest.mark.parametrize(
    ("event", "exception", "probe"),
    [
        ("task-failed", "misconfigured: worker is misconfigured: …", True),
        ("task-failed", "no_such_customer: no such customer", False),
        ("task-retried", "RetryCause('connection: no answer from Stripe (…)')", True),
        ("task-retried", "RetryCause('server_error: Stripe server error (500)')", False),
        ("task-succeeded", "", False),
    ],
)
def test_which_events_call_for_a_probe(event: str, exception: str, probe: bool) -> None:
    assert calls_for_a_probe(event, {"exception": exception}) is probe


class Consumer:
    """Records what the breaker asks of Celery's consumer, in the order asked."""

    def __init__(self, queues: list[str]) -> None:
        self.task_consumer = SimpleNamespace(queues=[SimpleNamespace(name=q) for q in queues])
        self.calls: list[tuple[str, str]] = []

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        fn(*args)

    def cancel_task_queue(self, queue: str) -> None:
        self.calls.append(("cancel", queue))

    def add_task_queue(self, queue: str) -> None:
        self.calls.append(("add", queue))


def test_the_breaker_cancels_its_queues_once_and_takes_them_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers = ["STRIPE_API_KEY is not set", "STRIPE_API_KEY is not set", None]
    breaker = Breaker(probe=lambda: answers.pop(0), interval=lambda: 3600.0)
    consumer = Consumer(["cards.bulk", "cards"])
    breaker.start(consumer)
    try:
        assert breaker.is_open and breaker.cause == "STRIPE_API_KEY is not set"
        assert breaker.step() is Action.STAY
        assert breaker.step() is Action.CLOSE
    finally:
        breaker.stop()
    assert consumer.calls == [
        ("cancel", "cards"),
        ("cancel", "cards.bulk"),
        ("add", "cards"),
        ("add", "cards.bulk"),
    ]
    critical = [r.getMessage() for r in caplog.records if r.levelname == "CRITICAL"]
    assert len(critical) == 1 and critical[0].startswith(
        "stripe breaker open: STRIPE_API_KEY is not set; taking no jobs from cards, cards.bulk"
    )

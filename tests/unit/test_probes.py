"""Liveness and readiness: the pure decisions, the state the consumer step keeps, and the WSGI
routing that answers the probes beside /metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from worker.probes import Health, HealthState, liveness, readiness, status_app

LIVE = Health(consuming=True, beat_age=1.0, breaker_cause=None)


@pytest.mark.parametrize(
    ("health", "live", "ready"),
    [
        (LIVE, None, None),
        (Health(True, None, None), None, None),  # no event-loop timer: no beat to check
        (
            Health(False, 1.0, None),
            "the consumer is not connected to the broker",
            "the consumer is not connected to the broker",
        ),
        (
            Health(True, 61.0, None),
            "the event loop has not run for 61 s",
            "the event loop has not run for 61 s",
        ),
        (
            Health(True, 1.0, "Stripe refused the key (401)"),
            None,
            "the Stripe breaker is open: Stripe refused the key (401)",
        ),
        (
            Health(False, 1.0, "Stripe refused the key (401)"),
            "the consumer is not connected to the broker",
            "the consumer is not connected to the broker",
        ),
        (
            Health(True, 1.0, None, "worker process w-2@h is not running"),
            None,
            "worker process w-2@h is not running",
        ),
        (
            Health(True, 1.0, "no answer from Stripe", "worker process w-2@h is not running"),
            None,
            "the Stripe breaker is open: no answer from Stripe",
        ),
    ],
)
def test_live_and_ready_decisions(health: Health, live: str | None, ready: str | None) -> None:
    assert liveness(health) == live
    assert readiness(health) == ready


def test_the_state_follows_the_consumer_and_its_beats() -> None:
    now = [100.0]
    state = HealthState(clock=lambda: now[0])
    assert state.read().consuming is False
    state.started(has_timer=True)
    now[0] = 130.0
    assert state.read().consuming is True and state.read().beat_age == 30.0
    state.beat()
    assert state.read().beat_age == 0.0
    state.stopped()
    assert state.read().consuming is False
    state.started(has_timer=False)
    assert state.read().beat_age is None
    assert state.read().siblings_problem is None
    state.watch_siblings(lambda: "worker process w-2@h is not running")
    assert state.read().siblings_problem == "worker process w-2@h is not running"


def call(app: Callable[..., Iterable[bytes]], path: str) -> tuple[str, bytes]:
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer["status"] = status

    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, start_response))
    return answer["status"], body


def test_probes_are_answered_and_every_other_path_goes_to_the_metrics_app() -> None:
    def metrics_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [])
        return [b"cards_metric 1\n"]

    health = [LIVE]
    app = status_app(metrics_app, read=lambda: health[0])
    assert call(app, "/livez") == ("200 OK", b"ok\n")
    assert call(app, "/readyz") == ("200 OK", b"ok\n")
    assert call(app, "/metrics") == ("200 OK", b"cards_metric 1\n")
    health[0] = Health(True, 1.0, "no answer from Stripe")
    assert call(app, "/livez") == ("200 OK", b"ok\n")
    assert call(app, "/readyz") == (
        "503 Service Unavailable",
        b"the Stripe breaker is open: no answer from Stripe\n",
    )

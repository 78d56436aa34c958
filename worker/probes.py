"""Liveness and readiness of a worker, for cheap HTTP probes (``/livez``, ``/readyz``).

Live: the consumer is started (connected to the broker: Celery stops its steps when
the connection drops and starts them again once it is back) and the main process's
event loop ran its heartbeat in the last ``MAX_BEAT_AGE_SECONDS``. Ready: live, the
Stripe breaker is closed, so the worker takes jobs, and every sibling worker process
(:mod:`worker.siblings`) runs. The decisions are pure
(:func:`liveness`, :func:`readiness`); :class:`HealthStep` (a consumer bootstep of
the main process) feeds :data:`HEALTH`; :func:`status_app` answers the probes and
hands every other path to the metrics app. A probe's body names the problem,
never a secret. Details: docs/observability.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from celery import bootsteps

from worker.breaker import BREAKER

__all__ = [
    "HEALTH",
    "Health",
    "HealthState",
    "HealthStep",
    "liveness",
    "readiness",
    "status_app",
]

#: The event loop beats this often; a beat older than the maximum means a stuck loop.
BEAT_SECONDS: Final = 5.0
MAX_BEAT_AGE_SECONDS: Final = 60.0

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class Health:
    """What the probes decide on, read at one instant."""

    consuming: bool
    #: Seconds since the event loop's last beat; None when the loop keeps no timer.
    beat_age: float | None
    breaker_cause: str | None
    #: Why a sibling worker process is not running; None when all run (or there are none).
    siblings_problem: str | None = None


def liveness(health: Health, max_beat_age: float = MAX_BEAT_AGE_SECONDS) -> str | None:
    """Why the worker is not live; None if it is. (Pure.)"""
    if not health.consuming:
        return "the consumer is not connected to the broker"
    if health.beat_age is not None and health.beat_age > max_beat_age:
        return f"the event loop has not run for {health.beat_age:.0f} s"
    return None


def readiness(health: Health, max_beat_age: float = MAX_BEAT_AGE_SECONDS) -> str | None:
    """Why the worker takes no jobs; None if it takes them. (Pure.)"""
    problem = liveness(health, max_beat_age)
    if problem is None and health.breaker_cause is not None:
        return f"the Stripe breaker is open: {health.breaker_cause}"
    if problem is None and health.siblings_problem is not None:
        return health.siblings_problem
    return problem


class HealthState:
    """The main process's consumer state, set by :class:`HealthStep`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._siblings: Callable[[], str | None] = lambda: None
        self._lock = threading.Lock()
        self._consuming = False
        self._last_beat: float | None = None

    def started(self, has_timer: bool) -> None:
        with self._lock:
            self._consuming = True
            self._last_beat = self._clock() if has_timer else None

    def stopped(self) -> None:
        with self._lock:
            self._consuming = False

    def beat(self) -> None:
        with self._lock:
            self._last_beat = self._clock()

    def watch_siblings(self, problem: Callable[[], str | None]) -> None:
        """Count ``problem()`` (a sibling process not running) against readiness."""
        self._siblings = problem

    def read(self) -> Health:
        with self._lock:
            age = None if self._last_beat is None else self._clock() - self._last_beat
            consuming = self._consuming
        return Health(consuming, age, BREAKER.cause, self._siblings())


#: The worker's health (its main process's; pool processes never start the step).
HEALTH = HealthState()


class HealthStep(bootsteps.StartStopStep):
    """Marks the consumer started or stopped, and beats on its event loop's timer."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self._beat: Any = None

    def start(self, c: Any) -> None:
        timer = getattr(c, "timer", None) if getattr(c, "hub", None) is not None else None
        HEALTH.started(has_timer=timer is not None)
        if timer is not None:
            self._beat = timer.call_repeatedly(BEAT_SECONDS, HEALTH.beat)

    def stop(self, c: Any) -> None:
        HEALTH.stopped()
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None


def _answer(problem: str | None, start_response: Callable[..., Any]) -> list[bytes]:
    status = "200 OK" if problem is None else "503 Service Unavailable"
    body = b"ok\n" if problem is None else problem.encode() + b"\n"
    start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
    return [body]


def status_app(metrics_app: WsgiApp, read: Callable[[], Health] = HEALTH.read) -> WsgiApp:
    """``/livez`` and ``/readyz`` answered here; any other path by ``metrics_app``."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/livez":
            return _answer(liveness(read()), start_response)
        if path == "/readyz":
            return _answer(readiness(read()), start_response)
        return metrics_app(environ, start_response)

    return app

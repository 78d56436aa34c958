"""A breaker for the worker's Stripe credentials and address: no job is burnt by a bad deploy.

Without a key, with a key Stripe refuses (401/403), or with a
``STRIPE_API_BASE`` that does not answer, the main process stops consuming
(the jobs stay queued), logs one CRITICAL line with the cause, sets
``cards_stripe_breaker_open{cause}`` and probes every
``CARDS_BREAKER_PROBE_SECONDS`` (one read of a customer that cannot exist: a 404
proves key and address); the first good probe takes the queues back. Probes run
at start, when a job ends ``misconfigured`` or lacks a connection, and while
open. Details: docs/worker.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Final

from celery import bootsteps

from cards.settings import Settings, get_settings
from worker.errors import Misconfigured, StripeCallError, StripeConnectionFailed
from worker.metrics import BREAKER_OPEN
from worker.stripe_api import StripeApi

__all__ = ["BREAKER", "Action", "Breaker", "BreakerStep", "next_action", "probe_stripe"]

logger = logging.getLogger(__name__)

#: Without a nudge, a closed breaker still probes this often (a revoked key is found).
CLOSED_PROBE_SECONDS: Final = 300.0


class Action(StrEnum):
    OPEN = "open"
    CLOSE = "close"
    STAY = "stay"


def next_action(is_open: bool, cause: str | None) -> Action:
    """What a probe's ``cause`` (None: it succeeded) does to the breaker. (Pure.)"""
    if cause is not None and not is_open:
        return Action.OPEN
    if cause is None and is_open:
        return Action.CLOSE
    return Action.STAY


def probe_stripe(settings: Settings) -> str | None:
    """Why this worker cannot work with Stripe now; None if it can."""
    try:
        StripeApi.from_settings(settings).probe()
    except Misconfigured as exc:
        return exc.message
    except StripeConnectionFailed as exc:
        return f"{exc.message}; STRIPE_API_BASE is {settings.stripe_api_base}"
    except StripeCallError:  # Stripe answered: key and address work
        return None
    return None


class Breaker:
    """The main process's breaker: its state, and the consumer it stops and restarts."""

    def __init__(
        self,
        probe: Callable[[], str | None] | None = None,
        interval: Callable[[], float] | None = None,
    ) -> None:
        self._probe = probe or (lambda: probe_stripe(get_settings()))
        self._interval = interval or (lambda: get_settings().breaker_probe_seconds)
        self._nudged = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._consumer: Any = None
        self._queues: list[str] = []
        self.cause: str | None = None

    @property
    def is_open(self) -> bool:
        return self.cause is not None

    def nudge(self) -> None:
        """Probe now: a job just failed in a way a bad configuration explains."""
        self._nudged.set()

    def start(self, consumer: Any) -> None:
        """Probe now, then keep probing; a (re)started consumer takes every queue again."""
        self.stop()
        self._consumer = consumer
        self._queues = sorted(q.name for q in consumer.task_consumer.queues)
        if self.cause is not None:
            BREAKER_OPEN.labels(self.cause).set(0)
            self.cause = None
        self._stopped = stopped = threading.Event()
        # At once: a worker without a key should not take a single job.
        if self.step() is Action.STAY and not self.is_open:
            logger.info("stripe: the probe succeeded; taking jobs from %s", ", ".join(self._queues))
        threading.Thread(
            target=self._run, args=(stopped,), name="cards-breaker", daemon=True
        ).start()

    def stop(self) -> None:
        self._stopped.set()
        self._nudged.set()

    def _run(self, stopped: threading.Event) -> None:
        last = time.monotonic()  # start() has just probed
        while not stopped.is_set():
            self._nudged.wait(self._interval() if self.is_open else CLOSED_PROBE_SECONDS)
            self._nudged.clear()
            # Nudges come with every failing job: probe at most once per interval.
            if stopped.wait(max(0.0, last + self._interval() - time.monotonic())):
                return
            last = time.monotonic()
            self.step()

    def step(self) -> Action:
        """Probe once and act on the answer."""
        try:
            cause = self._probe()
        except Exception:  # a probe bug must not stop the worker
            logger.exception("stripe breaker: the probe failed")
            return Action.STAY
        with self._lock:
            action = next_action(self.is_open, cause)
            if action is Action.OPEN:
                assert cause is not None
                self._open(cause)
            elif action is Action.CLOSE:
                self._close()
        return action

    def _open(self, cause: str) -> None:
        self.cause = cause
        BREAKER_OPEN.labels(cause).set(1)
        for queue in self._queues:
            self._consumer.call_soon(self._consumer.cancel_task_queue, queue)
        logger.critical(
            "stripe breaker open: %s; taking no jobs from %s (they stay queued) until a probe "
            "succeeds (every %g s)",
            cause,
            ", ".join(self._queues),
            self._interval(),
        )

    def _close(self) -> None:
        assert self.cause is not None
        BREAKER_OPEN.labels(self.cause).set(0)
        self.cause = None
        for queue in self._queues:
            self._consumer.call_soon(self._consumer.add_task_queue, queue)
        logger.warning(
            "stripe breaker closed: a probe succeeded; taking jobs from %s again",
            ", ".join(self._queues),
        )


#: The worker's breaker (its main process's; pool processes never start it).
BREAKER = Breaker()


class BreakerStep(bootsteps.StartStopStep):
    """Starts :data:`BREAKER` once the worker's consumer is taking jobs."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        logger.info("stripe: calling %s", get_settings().stripe_api_base)
        BREAKER.start(c)

    def stop(self, c: Any) -> None:
        BREAKER.stop()

"""The ``cards.set_default_cards`` task: a bulk batch of rows (see :mod:`cards.batches`).

Every row runs through the ``cards.set_default_card`` pipeline, its customer
order step given a :class:`BatchGuard` that takes the rows' locks in one round
trip; the rows run on ``CARDS_BULK_THREADS`` threads. A row's final envelope is
stored under its ``job_id``, as a single job's would be; a row that must wait
for the budget or its customer's lock waits in place, up to
:data:`IN_PLACE_WAIT_SECONDS`; any other retry leaves the batch as a single
job. A redelivered batch skips rows already answered; a Redis failure puts the
batch back on the queue. Details: docs/bulk-batches.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextvars import copy_context
from dataclasses import asdict, dataclass
from typing import Any, Final, cast

import celery
import kombu.exceptions
import redis
from celery.exceptions import Reject

from cards.batches import BATCH_TASK_NAME, validate_batch
from cards.envelope import Envelope, ErrorKind, failure
from cards.jobs import TASK_NAME, InvalidJob, accepts_quickly
from cards.redaction import event_reprs
from cards.results import ResultBackend
from cards.settings import get_settings
from worker import wiring
from worker.app import app
from worker.middleware.customer_order import CustomerOrder
from worker.ordering import AppliedRequest, CustomerGuard, Entry, customer_key
from worker.pipeline import Delivery, Outcome, Pipeline, RetryLater
from worker.process_local import per_process
from worker.task_requests import BatchRequest
from worker.tasks import delivery_of
from worker.tracing import job_span

__all__ = ["BatchGuard", "BatchSummary", "run_in_place", "run_rows", "set_default_cards"]

logger = logging.getLogger(__name__)

IN_PLACE_WAIT_SECONDS: Final = 30.0
BATCH_RESULT_SECONDS: Final = 3600
IN_PLACE_REASONS: Final = frozenset({"rate_limiter", "customer_busy"})
#: The fields the quick check of :func:`cards.jobs.accepts_quickly` decides.
QUICK_FIELDS: Final = frozenset({"userId", "default_source", "job_id", "stripe_account"})

#: Failures of the broker or the result store: the batch goes back on the queue.
INFRASTRUCTURE_ERRORS: Final = (redis.RedisError, kombu.exceptions.OperationalError)


@per_process
def row_threads() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(get_settings().bulk_threads, thread_name_prefix="cards-row")


def run_in_place(
    run: Callable[[], Outcome],
    sleep: Callable[[float], None] = time.sleep,
    max_wait: float = IN_PLACE_WAIT_SECONDS,
) -> Outcome:
    """``run()`` again after each retry it may wait out in place, while ``max_wait`` lasts."""
    waited = 0.0
    while True:
        outcome = run()
        if not isinstance(outcome, RetryLater) or outcome.reason not in IN_PLACE_REASONS:
            return outcome
        if waited + outcome.countdown > max_wait:
            return outcome
        sleep(outcome.countdown)
        waited += outcome.countdown


class BatchGuard:
    """A batch's view of the customer guard (:mod:`worker.ordering`): its rows' locks
    are taken in one round trip before they run, and released, with their newest
    requests recorded, in one round trip once they have all run (before their
    envelopes are stored). Two Lua calls per row were a fifth of a bulk worker's
    CPU (py-spy). A key met again, or whose lock another job held, is entered
    alone as usual."""

    def __init__(self, guard: CustomerGuard, keys: Sequence[str]) -> None:
        distinct = list(dict.fromkeys(keys))
        # Another row of this batch waits for these customers: release them at once.
        self._repeated = {key for key, count in Counter(keys).items() if count > 1}
        self._guard = guard
        self._entered: dict[str, Entry] = dict(
            zip(distinct, guard.enter_many(distinct), strict=True)
        )
        self._leaving: list[tuple[str, str, AppliedRequest | None]] = []
        self._lock = threading.Lock()
        self.max_job_age_seconds = guard.max_job_age_seconds
        self.lock_seconds = guard.lock_seconds

    def enter(self, key: str, job_id: str = "") -> Entry:
        with self._lock:
            entered = self._entered.pop(key, None)
        if entered is not None and entered[0] is not None:
            return entered
        return self._guard.enter(key, job_id)

    def leave(self, key: str, token: str, applied: AppliedRequest | None = None) -> None:
        if key in self._repeated:
            self._guard.leave(key, token, applied)
            return
        with self._lock:
            self._leaving.append((key, token, applied))

    def park(self, key: str, token: str, job_id: str, seconds: float) -> None:
        self._guard.park(key, token, job_id, seconds)

    def close(self) -> None:
        """Release every lock taken, used or not, and record the newest requests."""
        with self._lock:
            unused = [(key, token, None) for key, (token, _) in self._entered.items() if token]
            leaving, self._leaving, self._entered = [*self._leaving, *unused], [], {}
        self._guard.leave_many(leaving)


def _row_key(row: dict[str, Any]) -> str | None:
    """The row's customer key, for a row that will pass validation; else None."""
    if not accepts_quickly({k: v for k, v in row.items() if k in QUICK_FIELDS}):
        return None
    return customer_key(row["userId"], row.get("stripe_account"))


def _run_row(row: dict[str, Any], delivery: Delivery, pipeline: Pipeline) -> Envelope | None:
    """The row's final envelope; None if it was sent on as a single job."""
    job_id = str(row["job_id"])
    with job_span(f"row/{TASK_NAME}"):
        outcome = run_in_place(lambda: pipeline.run(job_id, delivery, row))
    if isinstance(outcome, RetryLater):
        app.send_task(
            TASK_NAME,
            kwargs=row,
            task_id=job_id,
            queue=delivery.queue,
            countdown=outcome.countdown,
            retries=delivery.number,  # the next delivery is a retry: it reads the job's state
            **event_reprs(job_id),
        )
        return None
    return cast(Envelope, outcome)


@dataclass(frozen=True)
class BatchSummary:
    """Counts of one delivery of a batch, as its own envelope."""

    rows: int
    answered: int
    sent_alone: int
    skipped: int

    def envelope(self) -> Envelope:
        return {
            "status": True,
            "message": (
                f"{self.rows} rows: {self.answered} answered, {self.sent_alone} retrying as "
                f"single jobs, {self.skipped} answered before"
            ),
            "data": asdict(self),
        }


def _batch_pipeline(rows: list[dict[str, Any]]) -> tuple[Pipeline, BatchGuard | None]:
    """The set_default_card pipeline, its customer order kept by a guard for these rows."""
    pipeline = wiring.pipeline(TASK_NAME)  # built here, once, before the threads share it
    order = pipeline.step(CustomerOrder)
    if order is None or not isinstance(order.guard, CustomerGuard):
        return pipeline, None
    guard = BatchGuard(order.guard, [key for key in map(_row_key, rows) if key is not None])
    return pipeline.replacing(CustomerOrder, CustomerOrder(guard, order.policy, order.clock)), guard


def run_rows(
    rows: list[dict[str, Any]], delivery: Delivery, results: ResultBackend
) -> BatchSummary:
    """Answer or send on every row not answered yet, on this process's row threads.

    Raises the first infrastructure error once every row has had its turn.
    """
    done = results.answered(str(row["job_id"]) for row in rows)
    todo = [row for row in rows if row["job_id"] not in done]
    pipeline, guard = _batch_pipeline(todo)
    try:
        # Each row runs in a copy of the task's context: its span is a child of the batch's.
        futures = {
            str(row["job_id"]): row_threads().submit(
                copy_context().run, _run_row, row, delivery, pipeline
            )
            for row in todo
        }
        wait(futures.values())
    finally:
        if guard is not None:
            guard.close()
    answers: dict[str, Envelope] = {}
    for job_id, future in futures.items():
        error = future.exception()
        if error is not None:
            raise error
        envelope = future.result()
        if envelope is not None:
            answers[job_id] = envelope
    results.store_many(answers)
    return BatchSummary(len(rows), len(answers), len(todo) - len(answers), len(done))


def _answer_batch(
    task: celery.Task[Any, Envelope], args: tuple[Any, ...], fields: dict[str, Any]
) -> Envelope:
    try:
        rows = validate_batch(args, fields)
    except InvalidJob as exc:
        return failure(str(exc), ErrorKind.INVALID_JOB, param=exc.fields[0])
    try:
        return run_rows(rows, delivery_of(task), ResultBackend(task.app)).envelope()
    except INFRASTRUCTURE_ERRORS as exc:
        # Rows answered so far are skipped when the batch comes back.
        logger.error("batch %s: Redis failed (%s); back on the queue", task.request.id, type(exc))
        raise Reject(f"Redis failed: {type(exc).__name__}", requeue=True) from None


# ignore_result: the batch's own answer is stored by hand, for BATCH_RESULT_SECONDS
# only; a million-row migration would otherwise keep 20,000 of them for a day.
@app.task(name=BATCH_TASK_NAME, bind=True, Request=BatchRequest, ignore_result=True)
def set_default_cards(self: celery.Task[Any, Envelope], *args: Any, **fields: Any) -> Envelope:
    envelope = _answer_batch(self, args, fields)
    ResultBackend(self.app).store_many({str(self.request.id): envelope}, BATCH_RESULT_SECONDS)
    return envelope

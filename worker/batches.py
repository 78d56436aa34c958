"""The ``cards.set_default_cards`` task: a bulk batch of rows (see :mod:`cards.batches`).

Every row runs as ``cards.set_default_card`` would run it (:func:`worker.execution.run_job`
with the same attempt and finish): validation, one writer per customer and the
newest request wins, the shared rate budget, the idempotency key, per-job retry
state, dead letters, the outcome log line and metrics. What a batch saves is
Celery's per-message cost, and what it adds is concurrency: the rows of a batch
run on :data:`~cards.settings.Settings.bulk_threads` threads, because a row
spends its time waiting on Stripe, on Redis or for a token, not on the CPU.

Where a row's answer goes:

- a final envelope is stored under the row's ``job_id`` in the result backend,
  exactly where a single job's would be;
- a row that has to wait for the rate budget or for its customer's lock waits
  in its thread (this is a bulk worker: no live job needs the slot), up to
  :data:`IN_PLACE_WAIT_SECONDS`;
- any other retry (a Stripe 5xx, a timeout, a 429) leaves the batch: the row
  is sent as a single ``cards.set_default_card`` job with the row's ``job_id``
  and the retry's countdown, and carries on as one.

Delivery: the batch is acknowledged once every row is answered or sent on
(``acks_late``, as every task here). If the worker dies mid-batch, Redis hands
the batch out again and rows that already have an answer are skipped (one
``MGET``); the others run again under the same idempotency keys, which Stripe
replays rather than applies. If Redis itself fails while rows are answered or
sent on, the batch is put back on the queue for the same reason.

Parameters:
    IN_PLACE_WAIT_SECONDS: longest a row waits in its thread, in total, for the
        rate budget or its customer's lock before it leaves the batch.
    IN_PLACE_REASONS: the retries a row waits out in place; none has called Stripe.
    BATCH_RESULT_SECONDS: how long a batch's own envelope (its counts) is kept;
        the rows' envelopes are kept like any job's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import Any, Final

import celery
import kombu.exceptions
import redis
from celery import states
from celery.exceptions import Reject

from cards.batches import BATCH_TASK_NAME, validate_batch
from cards.envelope import Envelope, ErrorKind, failure
from cards.jobs import TASK_NAME, InvalidJob, accepts_quickly, validate_job
from cards.redaction import event_reprs
from cards.settings import get_settings
from worker.app import app
from worker.execution import Delivery, delivery_of, run_job
from worker.ordering import AppliedRequest, CustomerGuard, Entry, customer_key
from worker.process_local import per_process
from worker.runner import RetryLater
from worker.task_requests import BatchRequest
from worker.tasks import Attempt, attempt_with, finish_job, runner

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
    run: Callable[[], Envelope | RetryLater],
    sleep: Callable[[float], None] = time.sleep,
    max_wait: float = IN_PLACE_WAIT_SECONDS,
) -> Envelope | RetryLater:
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


def _answered(backend: Any, job_ids: list[str]) -> set[str]:
    """The rows that already have a final answer (this batch was delivered before)."""
    values = backend.client.mget([backend.get_key_for_task(job_id) for job_id in job_ids])
    return {
        job_id
        for job_id, value in zip(job_ids, values, strict=True)
        if value is not None and backend.decode_result(value).get("status") in states.READY_STATES
    }


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

    def enter(self, key: str) -> Entry:
        with self._lock:
            entered = self._entered.pop(key, None)
        if entered is not None and entered[0] is not None:
            return entered
        return self._guard.enter(key)

    def leave(self, key: str, token: str, applied: AppliedRequest | None = None) -> None:
        if key in self._repeated:
            self._guard.leave(key, token, applied)
            return
        with self._lock:
            self._leaving.append((key, token, applied))

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


def _run_row(row: dict[str, Any], delivery: Delivery, attempt: Attempt) -> Envelope | None:
    """The row's final envelope; None if it was sent on as a single job."""
    job_id = str(row["job_id"])
    outcome = run_in_place(
        lambda: run_job(TASK_NAME, job_id, row, validate_job, attempt, delivery, finish_job)
    )
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
    return outcome


def _store(backend: Any, answers: dict[str, Envelope], expires: int | None = None) -> None:
    """Store envelopes as their tasks' results, in one round trip.

    What ``backend.store_result`` writes for each (the same meta, key, expiry
    and pub/sub message), without its read-before-write per row.
    """
    seconds = expires or backend.expires
    with backend.client.pipeline(transaction=False) as pipe:
        for job_id, envelope in answers.items():
            meta = backend._get_result_meta(envelope, states.SUCCESS, None, None)
            meta["task_id"] = job_id
            key, value = backend.get_key_for_task(job_id), backend.encode(meta)
            if seconds:
                pipe.setex(key, seconds, value)
            else:
                pipe.set(key, value)
            pipe.publish(key, value)
        pipe.execute()


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


def run_rows(rows: list[dict[str, Any]], delivery: Delivery, backend: Any) -> BatchSummary:
    """Answer or send on every row not answered yet, on this process's row threads.

    Raises the first infrastructure error once every row has had its turn.
    """
    shared = runner()  # built here, once, before the threads share it
    done = _answered(backend, [str(row["job_id"]) for row in rows])
    todo = [row for row in rows if row["job_id"] not in done]
    guard = None
    if isinstance(shared.guard, CustomerGuard):
        keys = [key for key in map(_row_key, todo) if key is not None]
        guard = BatchGuard(shared.guard, keys)
        shared = shared.with_guard(guard)
    attempt = attempt_with(shared)
    try:
        futures = {
            str(row["job_id"]): row_threads().submit(_run_row, row, delivery, attempt)
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
    if answers:
        _store(backend, answers)
    return BatchSummary(len(rows), len(answers), len(todo) - len(answers), len(done))


def _answer_batch(
    task: celery.Task[Any, Envelope], args: tuple[Any, ...], fields: dict[str, Any]
) -> Envelope:
    backend = task.app.backend
    try:
        rows = validate_batch(args, fields)
    except InvalidJob as exc:
        return failure(str(exc), ErrorKind.INVALID_JOB, param=exc.fields[0])
    try:
        return run_rows(rows, delivery_of(task), backend).envelope()
    except INFRASTRUCTURE_ERRORS as exc:
        # Rows answered so far are skipped when the batch comes back.
        logger.error("batch %s: Redis failed (%s); back on the queue", task.request.id, type(exc))
        raise Reject(f"Redis failed: {type(exc).__name__}", requeue=True) from None


# ignore_result: the batch's own answer is stored by hand, for BATCH_RESULT_SECONDS
# only; a million-row migration would otherwise keep 20,000 of them for a day.
@app.task(name=BATCH_TASK_NAME, bind=True, Request=BatchRequest, ignore_result=True)
def set_default_cards(self: celery.Task[Any, Envelope], *args: Any, **fields: Any) -> Envelope:
    envelope = _answer_batch(self, args, fields)
    _store(self.app.backend, {str(self.request.id): envelope}, BATCH_RESULT_SECONDS)
    return envelope

"""The send: a migration file's valid rows as jobs on the bulk queue, at most a window in flight.

Rows go ``CARDS_BULK_BATCH_ROWS`` to a message (a ``cards.set_default_cards``
batch; a dry run sends ``cards.check_default_card`` jobs one per message). A
row's job id is its ``job_id`` column, else ``<migration id>:<line>``, so a row
sent twice is one Stripe write. Each finished row gets its report line, then its
finished bit in Redis; its result is then deleted. A line at or below
``sent_through`` that is not finished is looked up before it is sent again.
Design and measurements: docs/migrations.md.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any, Final

from celery import Celery, states

from cards.batches import BATCH_TASK_NAME
from cards.jobs import TASK_NAME
from cards.messaging import celery_app
from cards.migration_records import LineOutcome, MigrationRecord
from cards.redaction import batch_reprs, event_reprs
from cards.results import ResultBackend
from cards.settings import get_settings
from producers.client import producer_app
from producers.migrate.progress import MigrationProgress
from producers.migrate.report import Report, open_report
from producers.migrate.scan import FileFormat, Row, open_rows
from producers.migrate.store import MigrationStore, migration_store

__all__ = [
    "DEFAULT_WINDOW",
    "INTERRUPTED",
    "InFlight",
    "Migration",
    "default_migration_id",
    "outcome_of",
    "sender_app",
]

#: Jobs in flight at most, unless ``--window`` says otherwise.
DEFAULT_WINDOW: Final = 500
#: Rows looked up in Redis (finished bits) per round trip.
CHUNK_ROWS: Final = 500
#: How often a full window polls for results: the interval doubles while none
#: arrive, and drops back on one.
POLL_MIN_SECONDS: Final = 0.05
POLL_MAX_SECONDS: Final = 0.5


# --- pure parts ------------------------------------------------------------------------------


def default_migration_id(sha256: str) -> str:
    """The migration id of a file with this content."""
    return f"m{sha256[:16]}"


def row_job_id(migration_id: str, row: Row) -> str:
    """The row's own job id, else ``<migration id>:<line>``."""
    assert row.job is not None
    return row.job.job_id or f"{migration_id}:{row.line}"


def outcome_of(meta: Mapping[str, Any] | None) -> tuple[LineOutcome, str, str] | None:
    """(outcome, message, failure kind) of a stored result, or None if it is not final."""
    if meta is None or meta.get("status") not in states.READY_STATES:
        return None
    envelope = meta.get("result")
    if meta["status"] == states.SUCCESS and isinstance(envelope, dict) and "status" in envelope:
        if envelope["status"]:
            return LineOutcome.DONE, str(envelope.get("message", "")), ""
        data = envelope.get("data")
        kind = str(data.get("kind", "")) if isinstance(data, dict) else ""
        # A newer request for the customer won: the row is not a failure.
        outcome = LineOutcome.SUPERSEDED if kind == "superseded" else LineOutcome.FAILED
        return outcome, str(envelope.get("message", "")), kind
    return LineOutcome.FAILED, f"job ended abnormally (state {meta['status']})", "internal"


def requested_at(record: MigrationRecord, line: int) -> datetime:
    """A row's request time: the migration's start plus one microsecond per line.

    Stable across resumes (a row sent again is the same request), and in file
    order, so where a customer appears twice the later line is the newer
    request; a request made after the migration started is newer than all of it.
    """
    return datetime.fromtimestamp(record.created_at, UTC) + timedelta(microseconds=line)


@dataclass(frozen=True, slots=True)
class Sent:
    """A row whose job is in flight: what its report line needs."""

    line: int
    user_id: str
    default_source: str


#: Set by ``cards migrate``'s Ctrl-C handler. Python drops a KeyboardInterrupt raised
#: inside a finalizer (``__del__``); the wait loop checks this too, so Ctrl-C always stops.
INTERRUPTED: Final = threading.Event()


class InFlight:
    """The bounded window of jobs sent and not yet finished, oldest first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("the window must hold at least one job")
        self.capacity = capacity
        self._jobs: OrderedDict[str, Sent] = OrderedDict()

    def __len__(self) -> int:
        return len(self._jobs)

    @property
    def full(self) -> bool:
        return len(self._jobs) >= self.capacity

    def add(self, job_id: str, sent: Sent) -> None:
        if self.full:
            raise OverflowError("the window is full; wait for a result first")
        self._jobs[job_id] = sent

    def job_ids(self) -> list[str]:
        return list(self._jobs)

    def pop(self, job_id: str) -> Sent:
        return self._jobs.pop(job_id)


def _chunks(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


# --- the edges: Redis and the broker ---------------------------------------------------------


@lru_cache(maxsize=1)
def sender_app() -> Celery:
    """A producer app whose result backend is disabled: sending subscribes to nothing."""
    app = celery_app("cards-migration")  # signs messages when signing is configured
    # Not conf.result_backend: Celery lets CELERY_RESULT_BACKEND in the environment win.
    app.backend_cls = "disabled"
    return app


class Migration:
    """Send one file's valid rows through the bulk queue and record what finished."""

    def __init__(
        self,
        record: MigrationRecord,
        path: Path,
        file_format: FileFormat,
        *,
        window: int = DEFAULT_WINDOW,
        progress: MigrationProgress | None = None,
        store: MigrationStore | None = None,
        task_name: str = TASK_NAME,
        batch_rows: int | None = None,
    ) -> None:
        self.record = record
        self._task_name = task_name
        # Only writes have a batch task; a dry run's checks go one per message.
        rows_per_message = batch_rows or get_settings().bulk_batch_rows
        self._batch_rows = min(rows_per_message, window) if task_name == TASK_NAME else 1
        self._path = path
        self._format = file_format
        self._window = InFlight(window)
        self._progress = progress
        self._store = store or migration_store()
        self._results = ResultBackend(producer_app())
        self._sender = sender_app()
        self._queue = get_settings().bulk_queue
        self._finished: list[tuple[int, LineOutcome]] = []
        self._counts = {
            "finished": record.finished,
            "failed": record.failed + record.invalid,
        }
        self._poll = POLL_MIN_SECONDS
        self._report: Report | None = None
        self._answered: list[str] = []  # job ids of the rows finished, not committed

    def _finish(
        self, line: int, fields: tuple[str, str, str], outcome: LineOutcome, message: str, kind: str
    ) -> None:
        assert self._report is not None
        self._report.write(line, fields, outcome, message, kind)
        self._finished.append((line, outcome))
        _, _, job_id = fields
        if job_id:  # an invalid row has none
            self._answered.append(job_id)
        self._counts["finished"] += 1
        if outcome is not LineOutcome.DONE:
            self._counts["failed"] += 1

    def _commit(self) -> None:
        if not self._finished:
            return
        assert self._report is not None
        self._report.flush()
        self._store.finish(self.record.id, self._finished)
        self._finished = []
        if self._answered:
            # The report and the finished bit now hold each row's outcome; its result
            # would only hold Redis memory (kilobytes a row, a customer each) for a day.
            self._results.delete_many(self._answered)
            self._answered = []
        if self._progress is not None:
            self._progress.update(self._counts["finished"], self._counts["failed"])

    def _outcomes(self, job_ids: list[str]) -> list[tuple[LineOutcome, str, str] | None]:
        """Each job's outcome, or None where it has no final result: one ``MGET``."""
        return [outcome_of(meta) for meta in self._results.read_many(job_ids)]

    def _collect(self, *, wait: bool) -> None:
        """Finish every in-flight job that has a result; if ``wait``, until one does."""
        while True:
            job_ids = self._window.job_ids()
            arrived = 0
            for job_id, result in zip(job_ids, self._outcomes(job_ids), strict=True):
                if result is None:
                    continue
                sent = self._window.pop(job_id)
                self._finish(sent.line, (sent.user_id, sent.default_source, job_id), *result)
                arrived += 1
            self._commit()
            if arrived or not wait or not job_ids:
                self._poll = POLL_MIN_SECONDS
                return
            if INTERRUPTED.is_set():
                raise KeyboardInterrupt
            time.sleep(self._poll)
            self._poll = min(self._poll * 2, POLL_MAX_SECONDS)

    def _send(self, batch: list[tuple[str, Row]]) -> None:
        """Send rows as one message: a bulk batch, or a single job when batches are off."""
        while self._window.capacity - len(self._window) < len(batch):
            self._collect(wait=True)
        jobs = []
        for job_id, row in batch:
            assert row.job is not None
            job = row.job.model_copy(
                update={"job_id": job_id, "requested_at": requested_at(self.record, row.line)}
            )
            jobs.append(job.to_task_kwargs())
        kwargs: dict[str, Any]
        if self._batch_rows == 1:
            (job_id, _), kwargs, name = batch[0], jobs[0], self._task_name
            reprs = event_reprs(job_id)
        else:
            job_id, name = str(uuid.uuid4()), BATCH_TASK_NAME
            kwargs = {"jobs": jobs, "migration_id": self.record.id}
            reprs = batch_reprs(job_id, self.record.id, len(jobs))
        self._sender.send_task(name, kwargs=kwargs, task_id=job_id, queue=self._queue, **reprs)
        for job_id, row in batch:
            assert row.job is not None
            self._window.add(job_id, Sent(row.line, row.job.userId, row.job.default_source))

    def _chunk(self, chunk: list[Row]) -> None:
        finished = self._store.finished_lines(self.record.id, [row.line for row in chunk])
        todo = [row for row, done in zip(chunk, finished, strict=True) if not done]
        for row in todo:
            if not row.valid:
                self._finish(
                    row.line,
                    (row.fields.get("userId", ""), row.fields.get("default_source", ""), ""),
                    LineOutcome.INVALID,
                    row.problem or "",
                    "invalid_job",
                )
        sendable = [row for row in todo if row.valid]
        if not sendable:
            self._commit()
            return
        job_ids = [row_job_id(self.record.id, row) for row in sendable]
        # Lines a killed run may have sent: their result may already be there.
        maybe_sent = [i for i, row in enumerate(sendable) if row.line <= self.record.sent_through]
        earlier = self._outcomes([job_ids[i] for i in maybe_sent])
        known = {i: result for i, result in zip(maybe_sent, earlier, strict=True) if result}
        # Recorded before sending: a line above sent_through was never sent.
        self._store.mark_sent_through(self.record.id, sendable[-1].line)
        batch: list[tuple[str, Row]] = []
        for i, (row, job_id) in enumerate(zip(sendable, job_ids, strict=True)):
            assert row.job is not None
            if i in known:
                self._finish(row.line, (row.job.userId, row.job.default_source, job_id), *known[i])
                continue
            batch.append((job_id, row))
            if len(batch) == self._batch_rows:
                self._send(batch)
                batch = []
        if batch:
            self._send(batch)
        self._commit()
        self._collect(wait=False)

    def run(self, *, fresh: bool) -> MigrationRecord:
        """Send every unfinished row and wait for all of them; the final record."""
        with (
            open_report(Path(self.record.report), fresh=fresh) as report,
            open_rows(self._path, self._format) as rows,
        ):
            self._report = report
            for chunk in _chunks(rows, CHUNK_ROWS):
                self._chunk(chunk)
            while len(self._window):
                self._collect(wait=True)
            self._commit()
        self._store.complete(self.record.id)
        final = self._store.get(self.record.id)
        assert final is not None
        return final

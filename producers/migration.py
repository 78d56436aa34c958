"""``cards migrate``: set many customers' default card from a file, resumably.

A migration reads its file twice, streaming, so memory stays flat:

1. **Scan**: every row is validated (:mod:`producers.rows`) and the file's
   SHA-256 is computed on the way. Invalid rows are reported with their line
   numbers; ``--validate-only`` stops here.
2. **Send**: valid rows become ``cards.set_default_card`` jobs on the bulk
   queue (``CARDS_BULK_QUEUE``), never the live one, sent
   ``CARDS_BULK_BATCH_ROWS`` to a message as one ``cards.set_default_cards``
   batch (:mod:`cards.batches`; each row keeps its own job id and result),
   with at most ``window`` jobs in flight: when the window is full the producer waits for results
   before it sends more, so Redis never holds more than ``window`` of this
   migration's jobs (plus, after a resume, the unfinished ones a killed run
   had sent). Each finished row gets its report line, then is marked finished
   in Redis (:mod:`cards.migrations`).

``--dry-run`` sends ``cards.check_default_card`` (:mod:`worker.checks`)
instead, which only reads; the same window, queue, record and report apply.

**Identity and resume.** A migration's id is ``m`` + the first 16 hex digits
of its file's SHA-256 unless ``--id`` names it: the same content is the same
migration wherever the file lives, and any edit (which may shift line
numbers) is a new one. A row's job id is its own ``job_id`` column, else
``<migration id>:<line>``, so its idempotency key is stable: a row sent twice
(the producer was killed after sending, before recording) is one Stripe
write. Re-running the command skips finished lines; a line at or below the
record's ``sent_through`` that is not finished may have been sent, so its
result is looked up first and the job is sent again only if there is none.

**Results** are read from the result backend by key (one ``MGET`` for the
window), not through ``AsyncResult.get``, and deleted once the row's report
line and finished bit are written: Redis then holds the results of at most
the window's rows, not a day of them (about 3 KB a row). Jobs are sent through an app whose
result backend is disabled (the workers still store every result): with a
Redis backend, ``send_task`` subscribes to each task's pub/sub channel, and
redis-py's PubSub keeps every channel name it was asked to (un)subscribe.
Measured on loopback Redis: the producer's RSS grew 8 MB over 40,000 sends
with the backend (200 bytes a row, 200 MB for a million) and not at all
without; 672-778 sends/s with it, 822-849 without (3,000 sends).

Parameters:
    DEFAULT_WINDOW: jobs in flight at most, unless ``--window`` says otherwise.
    CHUNK_ROWS: rows looked up in Redis (finished bits) per round trip.
    POLL_MIN_SECONDS / POLL_MAX_SECONDS: how often a full window polls for
        results; the interval doubles while none arrive, and drops back on one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import IO, Any, Final, TextIO

from celery import Celery, states

from cards.batches import BATCH_TASK_NAME
from cards.jobs import TASK_NAME
from cards.messaging import celery_app
from cards.migrations import LineOutcome, MigrationRecord, MigrationStore
from cards.redaction import batch_reprs, event_reprs
from cards.settings import get_settings
from producers.client import producer_app
from producers.progress import MigrationProgress
from producers.rows import FileFormat, Row, UnreadableFile, check_rows, read_rows

__all__ = [
    "DEFAULT_WINDOW",
    "REPORT_COLUMNS",
    "InFlight",
    "Migration",
    "ScanResult",
    "default_migration_id",
    "default_report_path",
    "migration_store",
    "outcome_of",
    "scan",
]

DEFAULT_WINDOW: Final = 500
CHUNK_ROWS: Final = 500
POLL_MIN_SECONDS: Final = 0.05
POLL_MAX_SECONDS: Final = 0.5
#: Bytes read at a time while hashing and parsing.
READ_BLOCK: Final = 1 << 20

REPORT_COLUMNS: Final = (
    "line",
    "userId",
    "default_source",
    "job_id",
    "status",
    "message",
    "kind",
)


# --- pure parts ------------------------------------------------------------------------------


def default_migration_id(sha256: str) -> str:
    """The migration id of a file with this content."""
    return f"m{sha256[:16]}"


def default_report_path(path: Path, *, dry_run: bool = False) -> Path:
    return path.with_name(path.name + (".dryrun.csv" if dry_run else ".report.csv"))


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
        return LineOutcome.FAILED, str(envelope.get("message", "")), kind
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


# --- the scan --------------------------------------------------------------------------------


class _HashingReader(io.RawIOBase):
    """A binary stream that hashes what is read through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        self.digest.update(data)
        buffer[: len(data)] = data
        return len(data)


def _text(binary: IO[bytes]) -> TextIO:
    # utf-8-sig: a BOM that spreadsheets write is not part of the first column's name.
    # newline="": the csv module sees quoted newlines as they are.
    return io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")


def _not_utf8(path: Path) -> UnreadableFile:
    return UnreadableFile(f"{path.name} is not UTF-8 text")


def _rows(path: Path, file_format: FileFormat, stream: TextIO) -> Iterator[Row]:
    try:
        yield from read_rows(stream, file_format)
    except UnicodeDecodeError:
        raise _not_utf8(path) from None


class OwnJobIds:
    """The ``job_id`` column's values seen so far, as 64-bit digests with their line.

    Only rows that carry their own job id cost memory (about 150 bytes each);
    the usual file, without the column, costs none.
    """

    def __init__(self) -> None:
        self._lines: dict[int, int] = {}

    def add(self, job_id: str, line: int) -> None:
        digest = int.from_bytes(hashlib.blake2b(job_id.encode(), digest_size=8).digest())
        first = self._lines.setdefault(digest, line)
        if first != line:
            raise UnreadableFile(
                f"line {line}: job_id repeats line {first}'s; job ids must be unique in a file"
            )


@dataclass(frozen=True)
class ScanResult:
    rows: int
    valid: int
    invalid: int
    sha256: str


def scan(
    path: Path, file_format: FileFormat, on_invalid: Callable[[Row], None] | None = None
) -> ScanResult:
    """Validate every row and hash the file, in one streaming pass.

    Rows are decided by :func:`producers.rows.check_rows`: the same decisions and
    problems as :func:`producers.rows.read_rows`, without building a job for each
    valid row (the scan only counts them).

    :class:`UnreadableFile` if two rows carry the same ``job_id``: they would
    share one idempotency key and one result, so neither row could be
    reported truthfully.
    """
    own_ids = OwnJobIds()
    with path.open("rb") as raw:
        hashing = _HashingReader(raw)
        stream = _text(io.BufferedReader(hashing, READ_BLOCK))
        try:
            tally = check_rows(stream, file_format, on_invalid=on_invalid, on_job_id=own_ids.add)
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
        hashing.digest.update(raw.read())  # anything a reader left unread (none, normally)
    return ScanResult(tally.rows, tally.valid, tally.rows - tally.valid, hashing.digest.hexdigest())


# --- the edges: Redis and the broker ---------------------------------------------------------


def migration_store() -> MigrationStore:
    backend: Any = producer_app().backend  # the Redis backend: its client is the Redis client
    return MigrationStore(backend.client)


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
        self._backend: Any = producer_app().backend
        self._sender = sender_app()
        self._queue = get_settings().bulk_queue
        self._finished: list[tuple[int, LineOutcome]] = []
        self._counts = {
            "finished": record.finished,
            "failed": record.failed + record.invalid,
        }
        self._poll = POLL_MIN_SECONDS
        self._report: Any = None
        self._keys: dict[str, bytes] = {}  # result-backend keys of the jobs in flight
        self._answered_keys: list[bytes] = []  # result keys of the rows finished, not committed

    # The report: one line per finished row, flushed before the row is marked finished,
    # so a killed producer can only repeat a report line, never lose one.

    def _open_report(self, fresh: bool) -> TextIO:
        report = Path(self.record.report)
        # Empty: a run killed before its first line left the file without its header.
        new = fresh or not report.exists() or report.stat().st_size == 0
        handle = report.open("w" if new else "a", encoding="utf-8", newline="")
        if new:
            csv.writer(handle).writerow(REPORT_COLUMNS)
            handle.flush()
        return handle

    def _finish(
        self, line: int, fields: tuple[str, str, str], outcome: LineOutcome, message: str, kind: str
    ) -> None:
        user_id, default_source, job_id = fields
        self._writer.writerow((line, user_id, default_source, job_id, outcome, message, kind))
        self._finished.append((line, outcome))
        if job_id:
            self._answered_keys.append(self._key(job_id))
        self._counts["finished"] += 1
        if outcome is not LineOutcome.DONE:
            self._counts["failed"] += 1

    def _commit(self) -> None:
        if not self._finished:
            return
        self._report.flush()
        self._store.finish(self.record.id, self._finished)
        self._finished = []
        if self._answered_keys:
            # The report and the finished bit now hold each row's outcome; its result
            # would only hold Redis memory (kilobytes a row, a customer each) for a day.
            self._backend.client.delete(*self._answered_keys)
            self._answered_keys = []
        if self._progress is not None:
            self._progress.update(self._counts["finished"], self._counts["failed"])

    def _key(self, job_id: str) -> bytes:
        key = self._keys.get(job_id)
        if key is None:
            key = self._backend.get_key_for_task(job_id)
        return bytes(key)

    def _results(self, job_ids: list[str]) -> list[tuple[LineOutcome, str, str] | None]:
        if not job_ids:
            return []
        keys = [self._key(job_id) for job_id in job_ids]
        values = self._backend.client.mget(keys)
        return [
            None if value is None else outcome_of(self._backend.decode_result(value))
            for value in values
        ]

    def _collect(self, *, wait: bool) -> None:
        """Finish every in-flight job that has a result; if ``wait``, until one does."""
        while True:
            job_ids = self._window.job_ids()
            arrived = 0
            for job_id, result in zip(job_ids, self._results(job_ids), strict=True):
                if result is None:
                    continue
                sent = self._window.pop(job_id)
                self._keys.pop(job_id, None)
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
            self._keys[job_id] = self._backend.get_key_for_task(job_id)

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
        earlier = self._results([job_ids[i] for i in maybe_sent])
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
            self._open_report(fresh) as report,
            self._path.open("rb", buffering=READ_BLOCK) as raw,
        ):
            self._report = report
            self._writer = csv.writer(report)
            stream = _text(raw)
            for chunk in _chunks(_rows(self._path, self._format, stream), CHUNK_ROWS):
                self._chunk(chunk)
            while len(self._window):
                self._collect(wait=True)
            self._commit()
        self._store.complete(self.record.id)
        final = self._store.get(self.record.id)
        assert final is not None
        return final

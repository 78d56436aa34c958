"""The batch-api engine (preview): a migration's rows through Stripe's Batch Jobs API.

The file is planned (:mod:`producers.migrate.batch_plan`: newest row per customer, the
rest reported superseded), then each account's rows go to Stripe as one batch job,
created and uploaded at once (the URL lives 5 minutes; a job left ``upload_timeout``
is created again). The job id is stored before the upload, so a resume polls it. On
``complete`` or ``timeout`` every result line is mapped back to its file line; a
``timeout`` sends the rest again. Lines that succeeded are settled against live jobs
(``lua/settle.lua``): newest request wins. Retryable failures, missing results and
lines a live job touched finish through the per-row engine (:mod:`.send`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import redis

from cards.customer_keys import customer_key, ordering_keys
from cards.jobs import TASK_NAME, SetDefaultCardJob
from cards.lua_scripts import read_lua
from cards.migration_records import LineOutcome, MigrationRecord
from cards.redaction import event_reprs
from cards.redis_urls import redis_client
from cards.results import ResultBackend
from cards.settings import get_settings
from producers.migrate.batch_client import BatchJobsClient
from producers.migrate.batch_errors import BatchCanceled, FileTransferFailed
from producers.migrate.batch_format import LineResult
from producers.migrate.batch_plan import PLATFORM, BatchPlan, PlannedRow, is_finished, line_of
from producers.migrate.progress import MigrationProgress
from producers.migrate.report import Report, open_report
from producers.migrate.scan import FileFormat, Row
from producers.migrate.send import INTERRUPTED, outcome_of, requested_at, sender_app
from producers.migrate.store import MigrationStore

__all__ = [
    "BatchEngine",
    "batch_client",
    "poll_delays",
    "reapply_job_id",
    "settle_action",
]

#: Statuses after which a batch job changes no more.
FINAL: Final = frozenset(
    {"complete", "timeout", "canceled", "upload_timeout", "validation_failed", "batch_failed"}
)
#: Result lines mapped and settled per round trip.
MAP_LINES: Final = 2000
FIRST_POLL_SECONDS: Final = 0.5
#: Newest-request records outlive the oldest job compared with them (as the worker's).
RECORD_SLACK_SECONDS: Final = 3600


#: A finished line: (line, (userId, card, job id), outcome, message, kind).
Finished = tuple[int, tuple[str, str, str], LineOutcome, str, str]


def poll_delays(first: float, cap: float) -> Iterable[float]:
    """Waits between looks at a running job: doubling from ``first`` up to ``cap``. (Pure.)"""
    delay = first
    while True:
        yield min(delay, cap)
        delay = min(delay * 2, cap)


def settle_action(answer: list[Any]) -> tuple[str, tuple[float, str, str] | None]:
    """What ``lua/settle.lua`` said of a customer: the action, and for ``newer`` the newer
    request (requested_at, job id, card). (Pure.)"""
    action = _text(answer[0])
    if action == "newer":
        return action, (float(_text(answer[1])), _text(answer[2]), _text(answer[3]))
    return action, None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def reapply_job_id(migration_id: str, line: int) -> str:
    """The job that re-applies a newer live request over a batch line. (Pure.)"""
    return "r" + hashlib.sha256(f"{migration_id}:{line}".encode()).hexdigest()[:40]


def batch_client() -> BatchJobsClient:
    """A Batch Jobs client from the settings; ValueError if no Stripe key is set."""
    settings = get_settings()
    if settings.stripe_api_key is None:
        raise ValueError(
            "--engine batch-api calls Stripe from this host: set STRIPE_API_KEY "
            "(or STRIPE_API_KEY_FILE)"
        )
    return BatchJobsClient(
        settings.stripe_api_key.get_secret_value(),
        api_base=settings.stripe_api_base,
        stripe_version=settings.batch_stripe_version,
        timeout=max(settings.stripe_timeout_seconds, 30.0),
    )


class BatchEngine:
    """Run one migration's rows through batch jobs; what is left goes per-row after."""

    def __init__(
        self,
        record: MigrationRecord,
        path: Path,
        file_format: FileFormat,
        *,
        store: MigrationStore,
        progress: MigrationProgress,
        client: BatchJobsClient | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.record = record
        self._path, self._format = path, file_format
        self._store, self._progress, self._client = store, progress, client
        self._clock = clock
        settings = get_settings()
        self._version = settings.batch_stripe_version
        self._poll_cap = settings.batch_poll_max_seconds
        self._queue = settings.bulk_queue
        self._record_ttl = settings.max_job_age_seconds + RECORD_SLACK_SECONDS
        state: redis.Redis = redis_client(settings.job_state_url, settings.sentinel_master)
        self._settle = state.register_script(read_lua("producers.migrate", "settle.lua"))
        self._state = state
        self._counts = {"finished": record.finished, "failed": record.failed + record.invalid}
        self._report: Report | None = None
        self.reapplied: list[str] = []

    # --- reporting -------------------------------------------------------------------------

    def _finish(self, rows: list[Finished]) -> None:
        """Report lines, then mark them finished: a kill repeats a report line, never loses one."""
        if not rows:
            return
        assert self._report is not None
        for line, fields, outcome, message, kind in rows:
            self._report.write(line, fields, outcome, message, kind)
        self._report.flush()
        self._store.finish(self.record.id, [(line, outcome) for line, _, outcome, _, _ in rows])
        self._counts["finished"] += len(rows)
        self._counts["failed"] += sum(
            outcome in (LineOutcome.FAILED, LineOutcome.INVALID) for _, _, outcome, _, _ in rows
        )
        self._progress.update(self._counts["finished"], self._counts["failed"])

    def _fields(self, row: PlannedRow) -> tuple[str, str, str]:
        own = row.own_job_id or f"{self.record.id}:{row.line}"
        return row.customer, row.source, own

    # --- the run ---------------------------------------------------------------------------

    def run(self, *, fresh: bool, send: bool = True) -> None:
        """Plan the file, report invalid and superseded rows; with ``send``, run the batch
        jobs. Lines left unfinished are the per-row engine's."""
        finished = self._store.finished_bitmap(self.record.id)
        with (
            open_report(Path(self.record.report), fresh=fresh) as report,
            BatchPlan(self.record.id) as plan,
        ):
            self._report = report
            invalid: list[Finished] = []

            def report_invalid(row: Row) -> None:
                if is_finished(finished, row.line):
                    return
                fields = (row.fields.get("userId", ""), row.fields.get("default_source", ""), "")
                invalid.append(
                    (row.line, fields, LineOutcome.INVALID, row.problem or "", "invalid_job")
                )
                if len(invalid) >= MAP_LINES:
                    self._finish(invalid)
                    invalid.clear()

            self._progress.note("planning: newest row per customer")
            plan.load(self._path, self._format, finished, report_invalid)
            self._finish(invalid)
            superseded: list[Finished] = []
            for row, by in plan.superseded():
                superseded.append(
                    (
                        row.line,
                        self._fields(row),
                        LineOutcome.SUPERSEDED,
                        f"superseded by line {by}, the newest row for this customer",
                        "superseded",
                    )
                )
                if len(superseded) >= MAP_LINES:
                    self._finish(superseded)
                    superseded = []
            self._finish(superseded)
            if send:
                assert self._client is not None
                jobs = self._store.batch_jobs(self.record.id)
                for account in sorted(set(plan.accounts()) | set(jobs)):
                    self._run_account(plan, account, jobs.get(account))
            self._progress.note("")

    def _run_account(
        self, plan: BatchPlan, account: str, running: tuple[str, float] | None
    ) -> None:
        assert self._client is not None
        label = "platform" if account == PLATFORM else account
        while True:
            if running is None:
                lines, count = plan.write_lines(account, self._version)
                if count == 0:
                    return
                since = self._store.now()
                job = self._client.create({"migration": self.record.id, "account": label})
                self._store.set_batch_job(self.record.id, account, job["id"], since)
                running = (job["id"], since)
                self._progress.note(f"{label}: batch job {job['id']}, uploading {count} lines")
                self._upload(job, lines)
                uploaded = True
            else:
                uploaded = False  # a resume: the killed run may not have uploaded
            job_id, since = running
            job, already_final = self._wait(job_id, label, plan, account, uploaded=uploaded)
            status = job["status"]
            if status in ("complete", "timeout", "canceled") and job.get("output_file"):
                self._map(job, plan, since)
            self._store.clear_batch_job(self.record.id, account)
            running = None
            if status == "complete":
                return
            if status in ("timeout", "upload_timeout"):
                left = plan.unfinished(account)
                self._progress.note(
                    f"{label}: batch job {job_id} {status}; its {left} lines left go in a new job"
                )
            if status == "canceled" and not already_final:
                # Canceled while this run waited: stop. Found canceled on a resume: the rest
                # goes in a new job.
                raise BatchCanceled(f"batch job {job_id} ({label}) was canceled")
            if status in ("validation_failed", "batch_failed"):
                self._progress.note(f"{label}: batch job {job_id} {status}; rows go per-row")
                return
            # timeout: the rest again; upload_timeout: the same lines, a new job.

    def _upload(self, job: dict[str, Any], lines: Path) -> None:
        """Upload now; a failed upload leaves the job to expire (``upload_timeout``)."""
        assert self._client is not None
        try:
            self._client.upload(job, lines)
        except FileTransferFailed as exc:
            self._progress.note(f"batch job {job['id']}: {exc}; it will be created again")

    def _wait(
        self, job_id: str, label: str, plan: BatchPlan, account: str, *, uploaded: bool
    ) -> tuple[dict[str, Any], bool]:
        """Poll the job with backoff until it is final; upload on a resume if need be. The
        final job, and whether it was final at the first look."""
        assert self._client is not None
        for looks, delay in enumerate(poll_delays(FIRST_POLL_SECONDS, self._poll_cap)):
            job = self._client.retrieve(job_id)
            status = job["status"]
            counts = f"{job.get('success_count', 0)} ok, {job.get('failure_count', 0)} failed"
            self._progress.note(f"{label}: batch job {job_id} {status} ({counts})")
            if status in FINAL:
                return job, looks == 0
            if status == "ready_for_upload":
                if _expired(job):
                    return {**job, "status": "upload_timeout"}, looks == 0
                if not uploaded:
                    lines, _ = plan.write_lines(account, self._version)
                    self._upload(job, lines)
                    uploaded = True
            deadline = self._clock() + delay
            while self._clock() < deadline:
                if INTERRUPTED.is_set():
                    raise KeyboardInterrupt
                time.sleep(min(0.1, max(deadline - self._clock(), 0)))
        raise AssertionError("unreachable")

    # --- results ---------------------------------------------------------------------------

    def _map(self, job: dict[str, Any], plan: BatchPlan, since: float) -> None:
        """Map the output a slice at a time. One thread does each slice's Redis work
        (settling, the report, finished bits) in order, while the next slice is read."""
        assert self._client is not None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cards-settle") as redis_side:
            previous: Future[None] | None = None
            batch: list[LineResult] = []
            for result in self._client.results(job):
                batch.append(result)
                if len(batch) >= MAP_LINES:
                    previous = self._map_batch(batch, plan, since, job["id"], redis_side, previous)
                    batch = []
            previous = self._map_batch(batch, plan, since, job["id"], redis_side, previous)
            if previous is not None:
                previous.result()

    def _map_batch(
        self,
        results: list[LineResult],
        plan: BatchPlan,
        since: float,
        job_id: str,
        redis_side: ThreadPoolExecutor,
        previous: Future[None] | None,
    ) -> Future[None] | None:
        by_line: dict[int, LineResult] = {}
        for result in results:
            line = line_of(self.record.id, result.line_id)
            if line is not None:
                by_line[line] = result  # an unreadable line stays unfinished: per-row
        rows = plan.rows(sorted(by_line))
        failed: list[Finished] = []
        applied: list[PlannedRow] = []
        for line, row in rows.items():
            result = by_line[line]
            if result.ok:
                applied.append(row)
            elif not result.retryable:
                message = result.message or "Stripe gave no message"
                kind = result.code or "stripe_error"
                failed.append((line, self._fields(row), LineOutcome.FAILED, message, kind))
        # Every line with a result is done with batch jobs: retryable failures and lines a
        # live job touched are the per-row engine's, not the next batch job's.
        plan.mark_finished(rows)
        if previous is not None:
            previous.result()  # slices commit in order; an error is raised here
        if not failed and not applied:
            return None
        return redis_side.submit(self._commit, failed, applied, since, job_id)

    def _commit(
        self, failed: list[Finished], applied: list[PlannedRow], since: float, job_id: str
    ) -> None:
        self._finish([*failed, *self._settled(applied, since, job_id)])

    def _settled(self, applied: list[PlannedRow], since: float, job_id: str) -> list[Finished]:
        """Settle rows Stripe applied against live jobs; the rows that are finished."""
        if not applied:
            return []
        keys: list[str] = []
        args: list[Any] = [repr(since), self._record_ttl]
        for row in applied:
            keys.extend(ordering_keys(customer_key(row.customer, row.stripe_account)))
            at = requested_at(self.record, row.line).timestamp()
            args.extend((repr(at), self._fields(row)[2], row.source))
        answers = self._settle(keys=keys, args=args)  # one call for the whole slice
        finished = []
        for row, answer in zip(applied, answers, strict=True):
            action, newer = settle_action(answer)
            if action == "recorded":
                message = f"default card set by batch job {job_id}"
                finished.append((row.line, self._fields(row), LineOutcome.DONE, message, ""))
            elif action == "newer":
                assert newer is not None
                finished.append(self._reapply(row, *newer))
            # busy, resend: unfinished, sent per-row through the ordering guard
        return finished

    def wait_reapplied(self, results: ResultBackend, on_failure: Callable[[str], None]) -> int:
        """Wait until every re-applied live request has its result; how many failed."""
        waiting, failed = list(self.reapplied), 0
        delays = iter(poll_delays(0.05, 1.0))
        while waiting:
            self._progress.note(f"{len(waiting)} newer live requests being applied again")
            answers = results.read_many(waiting)
            still = []
            for job_id, meta in zip(waiting, answers, strict=True):
                outcome = outcome_of(meta)
                if outcome is None:
                    still.append(job_id)
                elif outcome[0] is LineOutcome.FAILED:
                    failed += 1
                    on_failure(f"job {job_id} (a newer live request, applied again): {outcome[1]}")
            waiting = still
            if waiting:
                if INTERRUPTED.is_set():
                    raise KeyboardInterrupt
                time.sleep(next(delays))
        self._progress.note("")
        return failed

    def _reapply(
        self, row: PlannedRow, newer_at: float, newer_job: str, newer_source: str
    ) -> Finished:
        """Send the newer live request again (the batch line overwrote it on Stripe)."""
        own = reapply_job_id(self.record.id, row.line)
        if newer_job != own and newer_source:
            job = SetDefaultCardJob(
                userId=row.customer,
                default_source=newer_source,
                stripe_account=row.stripe_account,
                job_id=own,
                # Just after the newer request: it wins over it, and nothing else changes.
                requested_at=datetime.fromtimestamp(newer_at, UTC) + timedelta(microseconds=1),
            )
            sender_app().send_task(
                TASK_NAME,
                kwargs=job.to_task_kwargs(),
                task_id=own,
                queue=self._queue,
                **event_reprs(own),
            )
            self.reapplied.append(own)
        elif not newer_source:
            return (
                row.line,
                self._fields(row),
                LineOutcome.FAILED,
                f"a newer request (job {newer_job}) was applied while the batch job ran, and "
                "its card is unknown: set this customer's default card again",
                "newer_request_unknown",
            )
        return (
            row.line,
            self._fields(row),
            LineOutcome.SUPERSEDED,
            f"a newer request (job {newer_job}) won; it was applied again as job {own}",
            "superseded",
        )


def _expired(job: dict[str, Any]) -> bool:
    expires = (job.get("upload_url") or {}).get("expires_at")
    if not expires:
        return False
    return datetime.fromisoformat(str(expires).replace("Z", "+00:00")) <= datetime.now(UTC)

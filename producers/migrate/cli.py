"""``cards migrate``: the Typer sub-app (``run``, ``status``, ``resume``, ``list``).

``run`` checks the file and the migration's identity, scans the file
(:mod:`producers.migrate.scan`), sends its rows (:mod:`producers.migrate.send`, or
first through Stripe's Batch Jobs API with ``--engine batch-api``:
:mod:`producers.migrate.batch_engine`) and prints a summary; ``resume`` runs a
recorded migration again from its file; ``cancel`` cancels its batch jobs.
Errors about the input raise :class:`MigrationInputError` (exit code 2); Redis
errors exit 4 (:func:`producers.cli_errors.guarded`); Ctrl-C exits 130 and
prints ``cards migrate resume ID``.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, NoReturn

import typer

from cards.jobs import CHECK_TASK_NAME, MAX_JOB_ID_LENGTH, TASK_NAME, check_job_id
from cards.migration_records import MigrationRecord, MigrationState, migration_state
from cards.results import ResultBackend
from cards.settings import get_settings
from producers.cli_errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    fail,
    guarded,
)
from producers.client import check_connections, producer_app
from producers.migrate.batch_errors import BatchCanceled, BatchJobRefused, FileTransferFailed
from producers.migrate.progress import BarProgress, LogProgress, MigrationProgress
from producers.migrate.report import default_report_path
from producers.migrate.scan import FileFormat, Row, UnreadableFile, format_for, scan
from producers.migrate.send import DEFAULT_WINDOW, INTERRUPTED, Migration, default_migration_id
from producers.migrate.store import MigrationStore, migration_store
from producers.queues import queue_depth, queue_readers

if TYPE_CHECKING:
    from producers.migrate.batch_client import BatchJobsClient

__all__ = ["MigrationInputError", "app", "status_hint"]

#: A migration id leaves room in a job id (at most 128) for ``:<line>``.
MAX_MIGRATION_ID_LENGTH: Final = MAX_JOB_ID_LENGTH - 12
#: A dry run's id: the migration's, plus this.
DRY_RUN_SUFFIX: Final = ".dry"


class MigrationInputError(ValueError):
    """The file, the format or the migration id cannot be used."""


class Engine(StrEnum):
    """How a migration's rows reach Stripe."""

    ROWS = "rows"
    BATCH_API = "batch-api"


def _print_invalid(row: Row) -> None:
    typer.echo(f"line {row.line}: {row.problem}", err=True)


def _summary(record: MigrationRecord) -> str:
    superseded = f", {record.superseded} superseded" if record.superseded else ""
    return (
        f"migration {record.id}: {record.rows} rows, {record.done} done, "
        f"{record.failed} failed, {record.invalid} invalid{superseded}"
    )


def _start_worker_hint(queue: str) -> str:
    return f"start one: celery -A worker worker -Q {queue} -n bulk@%h -P prefork"


def _resume_hint(migration_id: str) -> str:
    return f"cards migrate resume {migration_id}"


def _when(timestamp: float) -> str | None:
    return datetime.fromtimestamp(timestamp, UTC).isoformat() if timestamp else None


def status_hint(
    record: MigrationRecord, state: MigrationState, queue: str, readers: list[str]
) -> str:
    """What an operator should do about a migration in ``state``. (Pure.)"""
    if state is MigrationState.DONE:
        return ""
    if state is MigrationState.FAILED:
        return f"some rows failed or were invalid: see the report {record.report}"
    if not readers:
        return f"no worker reads queue {queue}: {_start_worker_hint(queue)}" + (
            f"; then {_resume_hint(record.id)}" if state is MigrationState.STALLED else ""
        )
    if state is MigrationState.STALLED:
        return f"its producer stopped: {_resume_hint(record.id)}"
    return ""


def _status_view(record: MigrationRecord) -> dict[str, Any]:
    queue = get_settings().bulk_queue
    state = migration_state(record, time.time())
    readers = queue_readers(queue) if not record.complete else []
    view = record.as_dict()
    view.update(
        state=str(state),
        last_progress_at=_when(record.updated_at),
        queue=queue,
        queue_depth=queue_depth(queue),
        workers=readers,
        hint=status_hint(record, state, queue, readers),
    )
    if record.engine == Engine.BATCH_API:
        running = migration_store().batch_jobs(record.id)
        view["batch_jobs"] = {account: job_id for account, (job_id, _) in running.items()}
    return view


def _warn_without_readers(queue: str) -> None:
    if not queue_readers(queue):
        typer.echo(
            f"warning: no worker reads queue {queue}; the migration waits until one does "
            f"({_start_worker_hint(queue)})",
            err=True,
        )


def _check_id(migration_id: str) -> str:
    try:
        check_job_id(migration_id, "--id")
    except ValueError as exc:
        raise MigrationInputError(str(exc)) from None
    if len(migration_id) > MAX_MIGRATION_ID_LENGTH:
        raise MigrationInputError(f"--id must be at most {MAX_MIGRATION_ID_LENGTH} characters")
    return migration_id


def _existing(migration_id: str) -> MigrationRecord:
    check_connections()
    record = migration_store().get(_check_id(migration_id))
    if record is None:
        raise MigrationInputError(f"no migration {migration_id} (never started, or expired)")
    return record


def _migrate(
    path: Path,
    file_format: FileFormat | None,
    *,
    window: int,
    migration_id: str | None,
    report: Path | None,
    validate_only: bool,
    quiet: bool,
    dry_run: bool = False,
    expected_sha256: str | None = None,
    engine: Engine = Engine.ROWS,
) -> int:
    if not path.is_file():
        raise MigrationInputError(f"{path} is not a readable file")
    try:
        chosen = format_for(path, file_format)
        scanned = scan(path, chosen, _print_invalid)
    except (UnreadableFile, OSError) as exc:
        raise MigrationInputError(str(exc)) from None
    if validate_only:
        typer.echo(f"{scanned.rows} rows: {scanned.valid} valid, {scanned.invalid} invalid")
        return EXIT_FAILED if scanned.invalid else EXIT_OK
    if expected_sha256 is not None and scanned.sha256 != expected_sha256:
        raise MigrationInputError(f"{path} has changed since the migration started")
    chosen_id = _check_id(migration_id or default_migration_id(scanned.sha256))
    if dry_run:
        # Its own record, job ids and report: a dry run finishes no line of the migration.
        chosen_id = _check_id(chosen_id + DRY_RUN_SUFFIX)
    check_connections()
    store = migration_store()
    existing = store.get(chosen_id)
    if existing is not None and existing.sha256 != scanned.sha256:
        raise MigrationInputError(
            f"migration {chosen_id} was started from a different file; use another --id"
        )
    if existing is not None and existing.engine != engine:
        raise MigrationInputError(
            f"migration {chosen_id} was started with --engine {existing.engine}; "
            f"continue it with: {_resume_hint(chosen_id)}"
        )
    client: BatchJobsClient | None = None
    if engine is Engine.BATCH_API and not dry_run:
        from producers.migrate.batch_engine import batch_client

        try:
            client = batch_client()
        except ValueError as exc:
            raise MigrationInputError(str(exc)) from None
    report_path = report or (
        Path(existing.report) if existing else default_report_path(path, dry_run=dry_run)
    )
    try:
        with report_path.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise MigrationInputError(
            f"cannot write the report {report_path}: {exc.strerror}"
        ) from None
    record = store.begin(
        chosen_id,
        file=str(path),
        file_format=chosen.value,
        sha256=scanned.sha256,
        report=str(report_path.resolve()),
        rows=scanned.rows,
        valid=scanned.valid,
        engine=engine.value,
    )
    resumed = "resuming" if existing else "starting"
    typer.echo(
        f"migration {chosen_id}: {resumed}, {scanned.rows} rows ({scanned.invalid} invalid), "
        f"{record.finished} already finished, queue {get_settings().bulk_queue}",
    )
    view: type[BarProgress] | type[LogProgress] = LogProgress if quiet else BarProgress
    progress: MigrationProgress = view(
        chosen_id, scanned.rows, record.finished, record.failed + record.invalid
    )
    fresh = existing is None
    try:
        with progress, _ctrl_c_always_stops():
            batch = None
            if engine is Engine.BATCH_API:
                from producers.migrate.batch_engine import BatchEngine

                batch = BatchEngine(
                    record, path, chosen, store=store, progress=progress, client=client
                )
                batch.run(fresh=fresh, send=not dry_run)
                record, fresh = _current(store, chosen_id), False
            if engine is Engine.ROWS or record.finished < record.rows:
                # The per-row engine: every row, or what the batch jobs left.
                _warn_without_readers(get_settings().bulk_queue)
                Migration(
                    record,
                    path,
                    chosen,
                    window=window,
                    progress=progress,
                    store=store,
                    task_name=CHECK_TASK_NAME if dry_run else TASK_NAME,
                ).run(fresh=fresh)
            if batch is not None and batch.reapplied:
                failed = batch.wait_reapplied(
                    ResultBackend(producer_app()), lambda text: typer.echo(text, err=True)
                )
                typer.echo(
                    f"{len(batch.reapplied)} newer live requests applied again after the "
                    f"batch jobs ({failed} failed)"
                )
            store.complete(chosen_id)
            final = _current(store, chosen_id)
    except KeyboardInterrupt:
        return _stopped(store, chosen_id, "interrupted: migration")
    except BatchCanceled as exc:
        return _stopped(store, chosen_id, f"canceled ({exc}): migration")
    except (BatchJobRefused, FileTransferFailed) as exc:
        _stopped(store, chosen_id, f"Stripe's Batch Jobs API failed ({exc}): migration")
        return EXIT_FAILED
    finally:
        if client is not None:
            client.close()
    typer.echo(("dry run, nothing written: " if dry_run else "") + _summary(final))
    typer.echo(f"report: {final.report}")
    return EXIT_FAILED if final.failed or final.invalid else EXIT_OK


def _current(store: MigrationStore, migration_id: str) -> MigrationRecord:
    record = store.get(migration_id)
    assert record is not None
    return record


def _stopped(store: MigrationStore, migration_id: str, why: str) -> int:
    store.interrupt(migration_id)
    typer.echo(
        f"{why} {migration_id} stopped; what finished is kept, "
        f"continue with: {_resume_hint(migration_id)}",
        err=True,
    )
    return EXIT_INTERRUPTED


@contextmanager
def _ctrl_c_always_stops() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt and sets :data:`INTERRUPTED`, which the wait loop
    checks: an interrupt that lands inside a finalizer still stops the migration."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        INTERRUPTED.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        INTERRUPTED.clear()


def _list() -> int:
    check_connections()
    for record in migration_store().all():
        shown = {
            "id": record.id,
            "state": str(migration_state(record, time.time())),
            "rows": record.rows,
            "done": record.done,
            "failed": record.failed,
            "invalid": record.invalid,
            "file": record.file,
            "last_progress_at": _when(record.updated_at),
        }
        typer.echo(json.dumps(shown))
    return EXIT_OK


def _status(migration_id: str) -> int:
    typer.echo(json.dumps(_status_view(_existing(migration_id)), indent=2))
    return EXIT_OK


def _resume(migration_id: str, *, window: int, quiet: bool) -> int:
    record = _existing(migration_id)
    dry = record.id.endswith(DRY_RUN_SUFFIX)
    return _migrate(
        Path(record.file),
        FileFormat(record.format),
        window=window,
        migration_id=record.id.removesuffix(DRY_RUN_SUFFIX) if dry else record.id,
        report=Path(record.report),
        validate_only=False,
        quiet=quiet,
        dry_run=dry,
        expected_sha256=record.sha256,
        engine=Engine(record.engine),
    )


def _cancel(migration_id: str) -> int:
    record = _existing(migration_id)
    if record.engine != Engine.BATCH_API:
        raise MigrationInputError(
            f"migration {migration_id} runs on the bulk queue, not in batch jobs; "
            "stop its producer with Ctrl-C"
        )
    jobs = migration_store().batch_jobs(record.id)
    if not jobs:
        typer.echo(f"migration {migration_id}: no batch job is running")
        return EXIT_OK
    from producers.migrate.batch_engine import batch_client

    try:
        client = batch_client()
    except ValueError as exc:
        raise MigrationInputError(str(exc)) from None
    code = EXIT_OK
    try:
        for account, (job_id, _) in sorted(jobs.items()):
            try:
                status = client.cancel(job_id)["status"]
            except BatchJobRefused as exc:
                typer.echo(f"batch job {job_id} ({account}): {exc}", err=True)
                code = EXIT_FAILED
                continue
            typer.echo(f"batch job {job_id} ({account}): {status}")
    finally:
        client.close()
    migration_store().interrupt(record.id)
    typer.echo(f"what finished is kept; send the rest again with: {_resume_hint(record.id)}")
    return code


# --- the sub-app ------------------------------------------------------------------------------

app = typer.Typer(
    help="Set many default cards from a file, on the bulk queue, resumably.",
    no_args_is_help=True,
)

Window = Annotated[int, typer.Option(min=1, help="Jobs in flight at most (sent, not finished).")]
Quiet = Annotated[bool, typer.Option("--quiet", help="Log lines instead of a progress bar.")]
MigrationId = Annotated[
    str,
    typer.Argument(
        metavar="ID", help="The migration's id (printed when it starts).", show_default=False
    ),
]


def _exit_with(action: Callable[[], int]) -> NoReturn:
    """Run a command's action; exit with its code, or 2 for bad input, 4 for Redis."""
    try:
        code = guarded(action, connects=False)
    except MigrationInputError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    raise typer.Exit(code)


@app.command("run", no_args_is_help=True)
def run(
    file: Annotated[
        Path,
        typer.Argument(metavar="FILE", help="A CSV or JSONL file to migrate.", show_default=False),
    ],
    file_format: Annotated[
        FileFormat | None,
        typer.Option("--format", help="csv or jsonl; by default from the file's extension."),
    ] = None,
    window: Window = DEFAULT_WINDOW,
    migration_id: Annotated[
        str | None,
        typer.Option("--id", help="The migration's id; by default m + the file's SHA-256."),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Report CSV; by default <FILE>.report.csv.")
    ] = None,
    validate_only: Annotated[
        bool, typer.Option("--validate-only", help="Validate every row, send nothing.")
    ] = False,
    quiet: Quiet = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Check through the workers, reading only, that each customer exists and "
            "has the card; write nothing.",
        ),
    ] = False,
    engine: Annotated[
        Engine,
        typer.Option(
            help="rows: jobs on the bulk queue. batch-api (preview): Stripe's Batch Jobs "
            "API, newest row per customer, the rest superseded; needs STRIPE_API_KEY here.",
        ),
    ] = Engine.ROWS,
) -> None:
    """Migrate a file: each valid row a job on the bulk queue, at most --window in flight.

    Exit codes: 0 every row done; 1 some row invalid or failed; 2 bad input
    (unreadable file, unknown migration); 4 Redis cannot be reached; 130
    interrupted (Ctrl-C: it prints the resume command).
    """
    _exit_with(
        lambda: _migrate(
            file.resolve(),
            file_format,
            window=window,
            migration_id=migration_id,
            report=report,
            validate_only=validate_only,
            quiet=quiet,
            dry_run=dry_run,
            engine=engine,
        )
    )


@app.command("status")
def status(migration_id: MigrationId) -> None:
    """Print a migration's state, counts, queue depth, workers and a hint as JSON."""
    _exit_with(lambda: _status(migration_id))


@app.command("resume")
def resume(
    migration_id: MigrationId, window: Window = DEFAULT_WINDOW, quiet: Quiet = False
) -> None:
    """Continue a migration from its file; finished rows are skipped. Exit codes as `run`'s."""
    _exit_with(lambda: _resume(migration_id, window=window, quiet=quiet))


@app.command("cancel")
def cancel(migration_id: MigrationId) -> None:
    """Cancel a batch-api migration's running batch jobs; `resume` sends the rest again."""
    _exit_with(lambda: _cancel(migration_id))


@app.command("list")
def list_migrations() -> None:
    """Print every recorded migration with its state, one JSON line each."""
    _exit_with(_list)

"""How a migration shows its progress: a live bar for a person, log lines for a log.

The migration only calls :meth:`MigrationProgress.update` with its counts; it
does not know which view it has. The bar (rich) shows done, failed (failed or
invalid rows, the summary's two counts added), rate and ETA on stderr;
``--quiet`` prints one line every ``LOG_EVERY_SECONDS`` instead. Both start
from the counts a resumed migration already had; :meth:`MigrationProgress.note`
shows a batch job's state (on the bar, or as a line when it changes).

Parameters:
    LOG_EVERY_SECONDS: how often the quiet view prints a line.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING, Final, Protocol, Self

import typer

if TYPE_CHECKING:
    from rich.progress import ProgressColumn

__all__ = ["BarProgress", "LogProgress", "MigrationProgress"]

LOG_EVERY_SECONDS: Final = 5.0


class MigrationProgress(Protocol):
    def __enter__(self) -> MigrationProgress: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def update(self, finished: int, failed: int) -> None:
        """``finished`` rows of the total (done, failed or invalid), ``failed`` of them not done."""

    def note(self, text: str) -> None:
        """What the migration waits on now (a batch job's state and counts)."""


class _View:
    """A progress view as a context manager: shown on entry, finished on exit."""

    def __enter__(self) -> Self:
        self._start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _start(self) -> None:
        pass

    def _stop(self) -> None:
        pass


def _rate_column() -> ProgressColumn:
    """Rows per second. (rich is imported here, by the bar only: a fifth of every other
    ``cards`` command's start-up.)"""
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("-- rows/s" if speed is None else f"{speed:,.0f} rows/s")

    return RateColumn()


class BarProgress(_View):
    """A live bar on stderr: finished/total, failed, rows per second and ETA."""

    def __init__(self, migration_id: str, total: int, already: int, already_failed: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("failed or invalid {task.fields[failed]}"),
            _rate_column(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task(
            migration_id, total=total, failed=already_failed, note=""
        )
        self._already = already

    def _start(self) -> None:
        self._progress.start()
        # Rows a killed run finished count as done, but not towards the rate.
        self._progress.update(self._task, completed=self._already)
        self._progress.reset(self._task, completed=self._already)

    def _stop(self) -> None:
        self._progress.stop()

    def update(self, finished: int, failed: int) -> None:
        self._progress.update(self._task, completed=finished, failed=failed)

    def note(self, text: str) -> None:
        self._progress.update(self._task, note=text)


class LogProgress(_View):
    """One line on stderr every few seconds, and one at the end."""

    def __init__(self, migration_id: str, total: int, already: int, already_failed: int) -> None:
        self._id = migration_id
        self._total = total
        self._already = already
        self._started = time.monotonic()
        self._last_log = self._started
        self._finished = already
        self._failed = already_failed
        self._note = ""

    def _stop(self) -> None:
        self._log()

    def update(self, finished: int, failed: int) -> None:
        self._finished, self._failed = finished, failed
        if time.monotonic() - self._last_log >= LOG_EVERY_SECONDS:
            self._log()

    def note(self, text: str) -> None:
        if text != self._note:
            self._note = text
            if text:
                typer.echo(f"migration {self._id}: {text}", err=True)

    def _log(self) -> None:
        self._last_log = time.monotonic()
        elapsed = max(self._last_log - self._started, 1e-9)
        rate = (self._finished - self._already) / elapsed
        typer.echo(
            f"migration {self._id}: {self._finished}/{self._total} finished, "
            f"{self._failed} failed or invalid, {rate:.0f} rows/s",
            err=True,
        )

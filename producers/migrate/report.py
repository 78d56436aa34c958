"""A migration's report: one CSV line per finished row, in :data:`REPORT_COLUMNS`.

The sender flushes the report before it marks the rows finished in Redis, so a
killed producer can only repeat a report line, never lose one. A resumed
migration appends to its report; a new one (or a report without its header)
starts it afresh.
"""

from __future__ import annotations

import csv
from pathlib import Path
from types import TracebackType
from typing import Final

__all__ = ["REPORT_COLUMNS", "Report", "default_report_path"]

REPORT_COLUMNS: Final = (
    "line",
    "userId",
    "default_source",
    "job_id",
    "status",
    "message",
    "kind",
)


def default_report_path(path: Path, *, dry_run: bool = False) -> Path:
    return path.with_name(path.name + (".dryrun.csv" if dry_run else ".report.csv"))


class Report:
    """The report file, open for appending while a migration runs."""

    def __init__(self, path: Path, *, fresh: bool) -> None:
        # Empty: a run killed before its first line left the file without its header.
        new = fresh or not path.exists() or path.stat().st_size == 0
        self._handle = path.open("w" if new else "a", encoding="utf-8", newline="")
        self._writer = csv.writer(self._handle)
        if new:
            self._writer.writerow(REPORT_COLUMNS)
            self._handle.flush()

    def __enter__(self) -> Report:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._handle.close()

    def write(
        self, line: int, fields: tuple[str, str, str], outcome: str, message: str, kind: str
    ) -> None:
        """One row's line: ``fields`` are its ``userId``, ``default_source`` and job id."""
        user_id, default_source, job_id = fields
        self._writer.writerow((line, user_id, default_source, job_id, outcome, message, kind))

    def flush(self) -> None:
        self._handle.flush()

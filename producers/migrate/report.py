"""A migration's report: one CSV line per finished row, in :data:`REPORT_COLUMNS`.

The sender flushes the report before it marks the rows finished in Redis, so a
killed producer can only repeat a report line, never lose one. A resumed
migration appends to its report; a new one (or a report without its header)
starts it afresh.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final, TextIO

__all__ = ["REPORT_COLUMNS", "Report", "default_report_path", "open_report"]

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
    """The report file's writer, while :func:`open_report` holds it open."""

    def __init__(self, handle: TextIO) -> None:
        self._handle = handle
        self._writer = csv.writer(handle)

    def write(
        self, line: int, fields: tuple[str, str, str], outcome: str, message: str, kind: str
    ) -> None:
        """One row's line: ``fields`` are its ``userId``, ``default_source`` and job id."""
        user_id, default_source, job_id = fields
        self._writer.writerow((line, user_id, default_source, job_id, outcome, message, kind))

    def write_header(self) -> None:
        self._writer.writerow(REPORT_COLUMNS)
        self._handle.flush()

    def flush(self) -> None:
        self._handle.flush()


@contextmanager
def open_report(path: Path, *, fresh: bool) -> Iterator[Report]:
    """The report, with its header if it is new (``fresh``) or has none yet."""
    # Empty: a run killed before its first line left the file without its header.
    new = fresh or not path.exists() or path.stat().st_size == 0
    with path.open("w" if new else "a", encoding="utf-8", newline="") as handle:
        report = Report(handle)
        if new:
            report.write_header()
        yield report

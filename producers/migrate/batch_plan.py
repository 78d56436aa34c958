"""A batch-api migration's plan: its valid rows in a temporary SQLite file.

The file is read once into SQLite (``rows``: line, account, customer, card, own job
id, the line that supersedes it), so memory stays flat however long the file is; a
bitmap (a bit a line) says which lines need no batch job any more.
A customer (per connected account) keeps only its last row: a later line is a newer
request (:func:`producers.migrate.send.requested_at`), the others are superseded.
Lines go to Stripe one account at a time, as JSONL in line order; results are mapped
back by line. The SQLite file is scratch, deleted on close: Redis holds what is
finished (:mod:`producers.migrate.store`), so a resume builds the plan again.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from producers.migrate.batch_format import input_line
from producers.migrate.scan import FileFormat, OnInvalid, Tally, check_file

__all__ = ["PLATFORM", "BatchPlan", "PlannedRow", "is_finished", "line_id", "line_of"]

#: The part of a migration that runs on the platform account (no ``context``).
PLATFORM: Final = "-"
#: Rows written to SQLite per statement.
INSERT_ROWS: Final = 10_000
#: Looked-up lines spanning less than this many times their count are read as a range.
RANGE_FACTOR: Final = 4


@dataclass(frozen=True, slots=True)
class PlannedRow:
    line: int
    account: str
    customer: str
    source: str
    own_job_id: str | None

    @property
    def stripe_account(self) -> str | None:
        return None if self.account == PLATFORM else self.account


def line_id(migration_id: str, line: int) -> str:
    """The id of a row's line in a batch job's file. (Pure.)"""
    return f"{migration_id}:{line}"


def line_of(migration_id: str, line_id_: str | None) -> int | None:
    """The line a result names, or None if it names none of this migration's. (Pure.)"""
    prefix, _, number = (line_id_ or "").rpartition(":")
    if prefix != migration_id or not number.isdigit():
        return None
    return int(number)


def is_finished(bitmap: bytes | bytearray, line: int) -> bool:
    """Bit ``line`` of a Redis bitmap (most significant bit first). (Pure.)"""
    byte = line >> 3
    return byte < len(bitmap) and bool(bitmap[byte] & (0x80 >> (line & 7)))


class BatchPlan:
    """The rows of one migration file, in a scratch SQLite database (see the module doc)."""

    def __init__(self, migration_id: str, directory: Path | None = None) -> None:
        self.migration_id = migration_id
        self._dir = tempfile.TemporaryDirectory(prefix="cards-batch-", dir=directory)
        self.directory = Path(self._dir.name)
        self._db = sqlite3.connect(self.directory / "plan.sqlite", isolation_level=None)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute(
            "CREATE TABLE rows (line INTEGER PRIMARY KEY, account TEXT NOT NULL, "
            "customer TEXT NOT NULL, source TEXT NOT NULL, job_id TEXT, superseded_by INTEGER)"
        )
        #: Lines that need no batch job (finished before, or handled since): bit n, line n.
        self._done = bytearray()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()
        self._dir.cleanup()

    # --- building --------------------------------------------------------------------------

    def load(
        self, path: Path, file_format: FileFormat, finished: bytes, on_invalid: OnInvalid
    ) -> Tally:
        """Read the file's valid rows in (``finished``: the record's bitmap of finished
        lines); mark each customer's older rows superseded by its last one."""
        self._done = bytearray(finished)
        pending: list[tuple[int, str, str, str, str | None]] = []

        def add(line: int, fields: dict[str, str]) -> None:
            pending.append(
                (
                    line,
                    fields.get("stripe_account") or PLATFORM,
                    fields["userId"],
                    fields["default_source"],
                    fields.get("job_id"),
                )
            )
            if len(pending) >= INSERT_ROWS:
                self._insert(pending)

        self._db.execute("BEGIN")
        tally = check_file(path, file_format, on_invalid, add)
        self._insert(pending)
        self._db.execute("CREATE INDEX by_customer ON rows (account, customer, line)")
        self._db.execute(
            "UPDATE rows SET superseded_by = newest.line FROM (SELECT line AS row, "
            "MAX(line) OVER (PARTITION BY account, customer) AS line FROM rows) AS newest "
            "WHERE rows.line = newest.row AND newest.line > newest.row"
        )
        self._db.execute("CREATE INDEX by_account ON rows (account, superseded_by, line)")
        self._db.execute("COMMIT")
        return tally

    def _insert(self, pending: list[tuple[int, str, str, str, str | None]]) -> None:
        self._db.executemany(
            "INSERT INTO rows (line, account, customer, source, job_id) VALUES (?, ?, ?, ?, ?)",
            pending,
        )
        pending.clear()

    # --- reading ---------------------------------------------------------------------------

    def superseded(self) -> Iterator[tuple[PlannedRow, int]]:
        """Unfinished rows that a later row of their customer supersedes, with that line."""
        query = (
            "SELECT line, account, customer, source, job_id, superseded_by FROM rows "
            "WHERE superseded_by IS NOT NULL ORDER BY line"
        )
        for line, account, customer, source, job_id, by in self._db.execute(query):
            if not is_finished(self._done, line):
                yield PlannedRow(line, account, customer, source, job_id), by

    def accounts(self) -> list[str]:
        """Accounts with unfinished, unsuperseded rows; the platform first."""
        found = [
            account
            for (account,) in self._db.execute("SELECT DISTINCT account FROM rows")
            if any(True for _ in self._pending(account))
        ]
        return sorted(found, key=lambda account: (account != PLATFORM, account))

    def _pending(self, account: str) -> Iterator[tuple[int, str, str]]:
        """The account's unsuperseded rows that need a batch job: (line, customer, card)."""
        done = self._done
        for line, customer, source in self._db.execute(
            "SELECT line, customer, source FROM rows WHERE account = ? "
            "AND superseded_by IS NULL ORDER BY line",
            (account,),
        ):
            if not is_finished(done, line):
                yield line, customer, source

    def write_lines(self, account: str, stripe_version: str) -> tuple[Path, int]:
        """The account's unfinished rows as a batch job's JSONL file; (file, lines)."""
        target = self.directory / "lines.jsonl"
        context = None if account == PLATFORM else account
        count = 0
        with target.open("wb", buffering=1 << 20) as out:
            for line, customer, source in self._pending(account):
                out.write(
                    input_line(
                        line_id(self.migration_id, line), customer, source, context, stripe_version
                    )
                )
                count += 1
        return target, count

    def rows(self, lines: Sequence[int]) -> dict[int, PlannedRow]:
        """The rows at these lines (those that are in the plan)."""
        if not lines:
            return {}
        low, high = min(lines), max(lines)
        if high - low < RANGE_FACTOR * len(lines):
            # Results in about file order (the usual case): one range scan.
            wanted = set(lines)
            query = self._db.execute(
                "SELECT line, account, customer, source, job_id FROM rows "
                "WHERE line BETWEEN ? AND ?",
                (low, high),
            )
            found: Iterable[Any] = (row for row in query if row[0] in wanted)
        else:
            found = self._db.execute(
                "SELECT line, account, customer, source, job_id FROM rows "
                "WHERE line IN (SELECT value FROM json_each(?))",
                (json.dumps(list(lines)),),
            )
        return {row[0]: PlannedRow(*row) for row in found}

    def mark_finished(self, lines: Iterable[int]) -> None:
        """These lines need no batch job any more (finished, or left to the per-row engine)."""
        done = self._done
        for line in lines:
            byte = line >> 3
            if byte >= len(done):
                done.extend(bytes(byte + 1 - len(done) + (1 << 16)))
            done[byte] |= 0x80 >> (line & 7)

    def unfinished(self, account: str) -> int:
        """How many of the account's rows still wait for a batch job."""
        return sum(1 for _ in self._pending(account))

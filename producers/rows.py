"""Rows of a migration file, read one at a time with the line each one starts on.

A migration file may hold millions of rows, so it is never loaded whole: each
reader is a generator over an open text stream, and memory stays flat however
long the file is. Each row keeps the physical line it starts on (1-based, the
header is line 1 of a CSV), because that number is how people find the row in
their file, and how the migration names the row's job (``<migration>:<line>``).

CSV fields may hold quoted newlines; a row then spans several lines and is
numbered by its first one. Blank lines are skipped in both formats.

Parsing is pure; validation is :func:`cards.jobs.validate_job`'s, so a row and
an API call break the same rules with the same messages.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final, TextIO

from cards.jobs import InvalidJob, SetDefaultCardJob, validate_job

__all__ = [
    "ALLOWED_FIELDS",
    "REQUIRED_FIELDS",
    "FileFormat",
    "Row",
    "UnreadableFile",
    "format_for",
    "read_rows",
]

REQUIRED_FIELDS: Final = ("userId", "default_source")
#: A migration row sets a default card; callbacks and request times are not per-row.
ALLOWED_FIELDS: Final = (*REQUIRED_FIELDS, "job_id", "stripe_account")
#: How much of an unsupported field's name is quoted back.
MAX_NAME_LENGTH: Final = 40
#: How much of a bad JSON line's parser message is kept.
MAX_PROBLEM_LENGTH: Final = 200


class FileFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


class UnreadableFile(ValueError):
    """The file as a whole cannot be migrated (no header, unknown format, …)."""


@dataclass(frozen=True, slots=True)
class Row:
    """One row: its line, its fields, and either its validated job or the problem."""

    line: int
    fields: dict[str, str]
    job: SetDefaultCardJob | None
    problem: str | None

    @property
    def valid(self) -> bool:
        return self.job is not None


def format_for(path: Path, explicit: FileFormat | None = None) -> FileFormat:
    """The file's format: ``explicit``, else by extension; :class:`UnreadableFile` if unknown."""
    if explicit is not None:
        return explicit
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return FileFormat.CSV
    if suffix in {".jsonl", ".ndjson"}:
        return FileFormat.JSONL
    raise UnreadableFile(
        f"cannot tell the format of {path.name} from its extension; use --format csv|jsonl"
    )


def _row(
    line: int,
    fields: dict[str, str],
    extra_problem: str | None = None,
    skip: frozenset[str] = frozenset(),
) -> Row:
    problems: list[str] = []
    if extra_problem is not None:
        problems.append(extra_problem)
    unsupported = sorted(name for name in fields if name not in ALLOWED_FIELDS)
    problems.extend(
        f"field {name[:MAX_NAME_LENGTH]!a} is not supported in a migration row"
        for name in unsupported
    )
    # Empty optional columns mean "not given".
    present = {k: v for k, v in fields.items() if k in ALLOWED_FIELDS and v != "" and k not in skip}
    if problems:
        # validate_job names the remaining problems (missing fields, bad ids) too.
        try:
            validate_job(present)
        except InvalidJob as exc:
            problems.extend(
                p for p, f in zip(exc.problems, exc.fields, strict=True) if f not in skip
            )
        return Row(line, fields, None, "invalid job: " + "; ".join(problems))
    try:
        return Row(line, fields, validate_job(present), None)
    except InvalidJob as exc:
        return Row(line, fields, None, str(exc))


def _csv_rows(stream: TextIO) -> Iterator[Row]:
    reader = csv.reader(stream, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise UnreadableFile("the CSV file is empty; it needs a header line") from None
    except csv.Error as exc:
        raise UnreadableFile(f"the CSV header cannot be read: {exc}") from None
    names = [name.strip() for name in header]
    missing = [name for name in REQUIRED_FIELDS if name not in names]
    if missing:
        raise UnreadableFile(
            f"the CSV header must name {', '.join(REQUIRED_FIELDS)} (missing: {', '.join(missing)})"
        )
    if len(set(names)) != len(names):
        raise UnreadableFile("the CSV header names a column twice")
    unknown = [ascii(name[:MAX_NAME_LENGTH]) for name in names if name not in ALLOWED_FIELDS]
    if unknown:
        raise UnreadableFile(
            f"the CSV header names columns a migration does not use: {', '.join(unknown)} "
            f"(allowed: {', '.join(ALLOWED_FIELDS)})"
        )
    consumed = reader.line_num
    while True:
        start = consumed + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # A broken quote swallows the rest of the file; nothing after it can be trusted.
            yield Row(start, {}, None, f"invalid row: the CSV cannot be read from here ({exc})")
            return
        # A record starts on the line after the previous one ended (a blank line is
        # a record of its own, with no values).
        consumed = reader.line_num
        if not values:
            continue
        line = start
        if len(values) != len(names):
            yield Row(
                line,
                dict(zip(names, values, strict=False)),
                None,
                f"invalid row: {len(values)} columns where the header has {len(names)}",
            )
            continue
        yield _row(line, dict(zip(names, values, strict=True)))


def _jsonl_rows(stream: TextIO) -> Iterator[Row]:
    for line, text in enumerate(stream, start=1):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            yield Row(line, {}, None, f"invalid row: not JSON ({exc.msg[:MAX_PROBLEM_LENGTH]})")
            continue
        if not isinstance(value, dict):
            yield Row(line, {}, None, "invalid row: must be a JSON object")
            continue
        # null means "not given", like an empty CSV column.
        given = {str(k): v for k, v in value.items() if v is not None}
        fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in given.items()}
        not_strings = sorted(
            k for k, v in given.items() if k in ALLOWED_FIELDS and not isinstance(v, str)
        )
        problem = None
        if not_strings:
            problem = "; ".join(f"{name} must be a string" for name in not_strings)
        yield _row(line, fields, problem, frozenset(not_strings))


def read_rows(stream: TextIO, file_format: FileFormat) -> Iterator[Row]:
    """Every row of the stream, in order, each validated; :class:`UnreadableFile` if the
    file as a whole is unusable (raised when the header is read)."""
    if file_format is FileFormat.CSV:
        return _csv_rows(stream)
    return _jsonl_rows(stream)

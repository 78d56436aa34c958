"""A migration file's rows: read one at a time, each with the line it starts on.

Memory stays flat however long the file is: readers are generators over a
stream. A row keeps the physical line it starts on (1-based; a CSV's header is
line 1; a row spanning quoted newlines is numbered by its first), which names
its job (``<migration>:<line>``). Blank lines are skipped. Validation is
:func:`cards.jobs.validate_job`'s; :func:`check_rows` (the scan's counting path)
decides every row exactly as :func:`read_rows` does. :func:`scan` hashes and
counts a file in one pass; :func:`open_rows` reads it for sending.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Final, TextIO

from cards.jobs import (
    InvalidJob,
    SetDefaultCardJob,
    accepts_quickly,
    quick_pattern,
    validate_job,
)

__all__ = [
    "ALLOWED_FIELDS",
    "REQUIRED_FIELDS",
    "FileFormat",
    "Row",
    "ScanResult",
    "Tally",
    "UnreadableFile",
    "check_file",
    "check_rows",
    "format_for",
    "open_rows",
    "read_rows",
    "scan",
]

REQUIRED_FIELDS: Final = ("userId", "default_source")
#: A migration row sets a default card; callbacks and request times are not per-row.
ALLOWED_FIELDS: Final = (*REQUIRED_FIELDS, "job_id", "stripe_account")
#: How much of an unsupported field's name is quoted back.
MAX_NAME_LENGTH: Final = 40
#: How much of a bad JSON line's parser message is kept.
MAX_PROBLEM_LENGTH: Final = 200
#: Bytes read at a time while hashing and parsing.
READ_BLOCK: Final = 1 << 20


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


def _csv_header(stream: TextIO) -> tuple[Any, list[str]]:
    """The CSV reader, past a checked header, and the header's column names."""
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
    return reader, names


def _csv_unreadable(line: int, exc: csv.Error) -> Row:
    return Row(line, {}, None, f"invalid row: the CSV cannot be read from here ({exc})")


def _csv_record(line: int, values: list[str], names: list[str]) -> Row | None:
    """The row of one CSV record, or None for a blank line (a record with no values)."""
    if not values:
        return None
    if len(values) != len(names):
        return Row(
            line,
            dict(zip(names, values, strict=False)),
            None,
            f"invalid row: {len(values)} columns where the header has {len(names)}",
        )
    return _row(line, dict(zip(names, values, strict=True)))


def _csv_rows(stream: TextIO) -> Iterator[Row]:
    reader, names = _csv_header(stream)
    consumed = reader.line_num
    while True:
        start = consumed + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # A broken quote swallows the rest of the file; nothing after it can be trusted.
            yield _csv_unreadable(start, exc)
            return
        # A record starts on the line after the previous one ended (a blank line is
        # a record of its own, with no values).
        consumed = reader.line_num
        row = _csv_record(start, values, names)
        if row is not None:
            yield row


def _jsonl_record(line: int, text: str) -> Row | None:
    """The row of one JSONL line, or None for a blank line."""
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return Row(line, {}, None, f"invalid row: not JSON ({exc.msg[:MAX_PROBLEM_LENGTH]})")
    return _jsonl_value(line, value)


def _jsonl_value(line: int, value: object) -> Row:
    if not isinstance(value, dict):
        return Row(line, {}, None, "invalid row: must be a JSON object")
    # null means "not given", like an empty CSV column.
    given = {str(k): v for k, v in value.items() if v is not None}
    fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in given.items()}
    not_strings = sorted(
        k for k, v in given.items() if k in ALLOWED_FIELDS and not isinstance(v, str)
    )
    problem = None
    if not_strings:
        problem = "; ".join(f"{name} must be a string" for name in not_strings)
    return _row(line, fields, problem, frozenset(not_strings))


def _jsonl_rows(stream: TextIO) -> Iterator[Row]:
    for line, text in enumerate(stream, start=1):
        row = _jsonl_record(line, text)
        if row is not None:
            yield row


def read_rows(stream: TextIO, file_format: FileFormat) -> Iterator[Row]:
    """Every row of the stream, in order, each validated; :class:`UnreadableFile` if the
    file as a whole is unusable (raised when the header is read)."""
    if file_format is FileFormat.CSV:
        return _csv_rows(stream)
    return _jsonl_rows(stream)


# --- the counting pass -----------------------------------------------------------------------

#: Gets each invalid row, as read_rows gives it.
OnInvalid = Callable[[Row], None]
#: Gets each valid row's own job_id, with the row's line.
OnJobId = Callable[[str, int], None]
#: Gets each valid row's line and its fields: userId, default_source, and job_id and
#: stripe_account when given (never empty).
OnValid = Callable[[int, dict[str, str]], None]


@dataclass(frozen=True, slots=True)
class Tally:
    """What a pass over the rows counted."""

    rows: int
    valid: int


@dataclass(frozen=True, slots=True)
class _Hooks:
    on_invalid: OnInvalid | None
    on_job_id: OnJobId | None
    on_valid: OnValid | None


def _settle(row: Row, hooks: _Hooks) -> int:
    """Hand a fully read row on; 1 if it is valid."""
    if row.job is None:
        if hooks.on_invalid is not None:
            hooks.on_invalid(row)
        return 0
    if row.job.job_id is not None and hooks.on_job_id is not None:
        hooks.on_job_id(row.job.job_id, row.line)
    if hooks.on_valid is not None:
        fields = {"userId": row.job.userId, "default_source": row.job.default_source}
        if row.job.job_id:
            fields["job_id"] = row.job.job_id
        if row.job.stripe_account:
            fields["stripe_account"] = row.job.stripe_account
        hooks.on_valid(row.line, fields)
    return 1


def _quick_csv(names: list[str]) -> Callable[[list[str]], bool]:
    """A record check for this header that says yes only where :func:`_csv_record`
    would give a valid row."""
    width = len(names)
    user, source = quick_pattern("userId"), quick_pattern("default_source")
    if width == len(REQUIRED_FIELDS) and user is not None and source is not None:
        # The usual file: two matches, no dict. Empty values fail both patterns.
        user_ok, source_ok = user.fullmatch, source.fullmatch
        at_user, at_source = names.index("userId"), names.index("default_source")
        return lambda values: (
            len(values) == width
            and user_ok(values[at_user]) is not None
            and source_ok(values[at_source]) is not None
        )

    def check(values: list[str]) -> bool:
        # Empty columns are "not given", as in _row.
        return len(values) == width and accepts_quickly(
            {name: value for name, value in zip(names, values, strict=True) if value}
        )

    return check


def _check_csv(stream: TextIO, hooks: _Hooks) -> Tally:
    reader, names = _csv_header(stream)
    quick = _quick_csv(names)
    at_job_id = names.index("job_id") if "job_id" in names else None
    rows = valid = 0
    consumed = reader.line_num
    try:
        for values in reader:
            # Lines as in _csv_rows: a record starts after the previous one ended.
            line = consumed + 1
            consumed = reader.line_num
            if quick(values):
                rows += 1
                valid += 1
                if at_job_id is not None and values[at_job_id] and hooks.on_job_id is not None:
                    hooks.on_job_id(values[at_job_id], line)
                if hooks.on_valid is not None:
                    # Empty columns are "not given", as in _row.
                    hooks.on_valid(line, {n: v for n, v in zip(names, values, strict=True) if v})
                continue
            row = _csv_record(line, values, names)
            if row is not None:
                rows += 1
                valid += _settle(row, hooks)
    except csv.Error as exc:
        # As in _csv_rows: the rest of the file cannot be trusted.
        rows += 1
        _settle(_csv_unreadable(consumed + 1, exc), hooks)
    return Tally(rows, valid)


def _check_jsonl(stream: TextIO, hooks: _Hooks) -> Tally:
    rows = valid = 0
    for line, text in enumerate(stream, start=1):
        try:
            value: Any = json.loads(text)
        except json.JSONDecodeError:
            value = None  # blank or broken: _jsonl_record says which
        if accepts_quickly(value):
            # All strings, so the row's fields are the object itself.
            rows += 1
            valid += 1
            if "job_id" in value and hooks.on_job_id is not None:
                hooks.on_job_id(value["job_id"], line)
            if hooks.on_valid is not None:
                hooks.on_valid(line, value)
            continue
        row = _jsonl_record(line, text)
        if row is not None:
            rows += 1
            valid += _settle(row, hooks)
    return Tally(rows, valid)


def check_rows(
    stream: TextIO,
    file_format: FileFormat,
    *,
    on_invalid: OnInvalid | None = None,
    on_job_id: OnJobId | None = None,
    on_valid: OnValid | None = None,
) -> Tally:
    """Count the stream's rows and valid rows, each decided as :func:`read_rows` decides it.

    ``on_invalid`` gets every invalid row as :func:`read_rows` gives it (same line,
    same problem), in file order; ``on_job_id`` gets every valid row's own
    ``job_id`` with its line; ``on_valid`` every valid row's line and fields.
    :class:`UnreadableFile` as for :func:`read_rows`.
    """
    hooks = _Hooks(on_invalid, on_job_id, on_valid)
    if file_format is FileFormat.CSV:
        return _check_csv(stream, hooks)
    return _check_jsonl(stream, hooks)


# --- the file: hashed and counted, then read for sending ---------------------------------------


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


def check_file(
    path: Path, file_format: FileFormat, on_invalid: OnInvalid, on_valid: OnValid
) -> Tally:
    """:func:`check_rows` over a file, streamed."""
    with path.open("rb", buffering=READ_BLOCK) as raw:
        try:
            return check_rows(_text(raw), file_format, on_invalid=on_invalid, on_valid=on_valid)
        except UnicodeDecodeError:
            raise _not_utf8(path) from None


@contextmanager
def open_rows(path: Path, file_format: FileFormat) -> Iterator[Iterator[Row]]:
    """The file's rows, as :func:`read_rows` gives them, while the file is open."""
    with path.open("rb", buffering=READ_BLOCK) as raw:
        yield _rows(path, file_format, _text(raw))


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


def scan(path: Path, file_format: FileFormat, on_invalid: OnInvalid | None = None) -> ScanResult:
    """Validate every row and hash the file, in one streaming pass.

    Rows are decided by :func:`check_rows`: the same decisions and problems as
    :func:`read_rows`, without building a job for each valid row (the scan only
    counts them).

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

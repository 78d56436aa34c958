"""The pure parts of `cards migrate`: rows and their lines, the window, outcomes, the record."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import fakeredis
import pytest

from cards.migration_records import LineOutcome, MigrationRecord, MigrationState, migration_state
from producers.migrate.cli import _ctrl_c_always_stops, status_hint
from producers.migrate.progress import BarProgress
from producers.migrate.scan import FileFormat, UnreadableFile, format_for, read_rows, scan
from producers.migrate.send import (
    INTERRUPTED,
    InFlight,
    Sent,
    default_migration_id,
    outcome_of,
    requested_at,
)
from producers.migrate.store import MigrationStore
from producers.queues import readers_of


def csv_rows(text: str) -> list[tuple[int, str | None]]:
    stream = io.StringIO(text, newline="")
    return [(row.line, row.problem) for row in read_rows(stream, FileFormat.CSV)]


def jsonl_rows(text: str) -> list[tuple[int, str | None]]:
    return [(row.line, row.problem) for row in read_rows(io.StringIO(text), FileFormat.JSONL)]


def test_csv_lines_count_the_header_blank_lines_and_quoted_newlines() -> None:
    text = (
        "userId,default_source,job_id\n"  # 1
        "cus_A1,card_B1,\n"  # 2
        "\n"  # 3
        'cus_A2,"card_\nB2",\n'  # 4-5
        "cus_A3,card_B3,j-3\n"  # 6
    )
    rows = csv_rows(text)
    assert [line for line, _ in rows] == [2, 4, 6]
    assert rows[0][1] is None and rows[2][1] is None
    assert (
        rows[1][1]
        == 'invalid job: default_source must be "card_" followed by letters and digits only'
    )


def test_csv_row_problems_name_fields_and_rules() -> None:
    rows = csv_rows(
        "userId,default_source,stripe_account\n"
        "cus_A1,card_B1,\n"
        "cus_A1,card_B1,acct_1,extra\n"
        "cus_A1\n"
        "cus_A1,tok_visa,\n"
    )
    assert rows[0] == (2, None)  # an empty optional column is "not given"
    assert rows[1] == (3, "invalid row: 4 columns where the header has 3")
    assert rows[2] == (4, "invalid row: 1 columns where the header has 3")
    assert rows[3] == (
        5,
        'invalid job: default_source must start with "card_" or "src_" or "pm_"',
    )


def test_csv_with_a_bom_and_crlf_line_ends() -> None:
    text = "\ufeffuserId,default_source\r\ncus_A1,card_B1\r\ncus_A2,pm_C2\r\n".encode()
    stream = io.TextIOWrapper(io.BytesIO(text), encoding="utf-8-sig", newline="")
    rows = list(read_rows(stream, FileFormat.CSV))
    assert [(r.line, r.valid) for r in rows] == [(2, True), (3, True)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the CSV file is empty; it needs a header line"),
        ("userId,source\n", "missing: default_source"),
        ("userId,default_source,userId\n", "names a column twice"),
        ("userId,default_source,callback_url\n", "does not use: 'callback_url'"),
    ],
)
def test_csv_without_a_usable_header_is_unreadable(text: str, message: str) -> None:
    with pytest.raises(UnreadableFile, match=message):
        csv_rows(text)


def test_jsonl_lines_and_problems() -> None:
    rows = jsonl_rows(
        '{"userId": "cus_A1", "default_source": "card_B1", "job_id": null}\n'
        "\n"
        "[1, 2]\n"
        "{broken\n"
        '{"userId": "cus_A1", "default_source": 5}\n'
        '{"userId": "cus_A1", "default_source": "card_B1", "defaultSource": "x"}\n'
    )
    assert rows == [
        (1, None),
        (3, "invalid row: must be a JSON object"),
        (4, "invalid row: not JSON (Expecting property name enclosed in double quotes)"),
        (5, "invalid job: default_source must be a string"),
        (6, "invalid job: field 'defaultSource' is not supported in a migration row"),
    ]


def test_format_by_extension_or_explicit() -> None:
    assert format_for(Path("a.CSV")) is FileFormat.CSV
    assert format_for(Path("a.ndjson")) is FileFormat.JSONL
    assert format_for(Path("a.txt"), FileFormat.JSONL) is FileFormat.JSONL
    with pytest.raises(UnreadableFile, match="--format"):
        format_for(Path("a.txt"))


def test_scan_counts_and_hashes_in_one_pass(tmp_path: Path) -> None:
    content = b"userId,default_source\ncus_A1,card_B1\ncus_bad!,card_B1\n"
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    seen: list[int] = []
    result = scan(path, FileFormat.CSV, lambda row: seen.append(row.line))
    assert (result.rows, result.valid, result.invalid) == (2, 1, 1)
    assert seen == [3]
    assert result.sha256 == hashlib.sha256(content).hexdigest()
    assert default_migration_id(result.sha256) == "m" + result.sha256[:16]


def test_the_window_holds_at_most_its_capacity() -> None:
    window = InFlight(2)
    window.add("a", Sent(2, "cus_A", "card_A"))
    assert not window.full
    window.add("b", Sent(3, "cus_B", "card_B"))
    assert window.full
    with pytest.raises(OverflowError):
        window.add("c", Sent(4, "cus_C", "card_C"))
    assert window.job_ids() == ["a", "b"]  # oldest first
    assert window.pop("b").line == 3
    assert not window.full and len(window) == 1
    with pytest.raises(ValueError, match="at least one"):
        InFlight(0)


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        (None, None),
        ({"status": "PENDING"}, None),
        ({"status": "RETRY", "result": None}, None),
        (
            {"status": "SUCCESS", "result": {"status": True, "message": "ok", "data": {}}},
            (LineOutcome.DONE, "ok", ""),
        ),
        (
            {
                "status": "SUCCESS",
                "result": {"status": False, "message": "no", "data": {"kind": "not_attached"}},
            },
            (LineOutcome.FAILED, "no", "not_attached"),
        ),
        (
            {
                "status": "SUCCESS",
                "result": {"status": False, "message": "newer", "data": {"kind": "superseded"}},
            },
            (LineOutcome.SUPERSEDED, "newer", "superseded"),
        ),
        (
            {"status": "FAILURE", "result": {"exc_type": "X"}},
            (LineOutcome.FAILED, "job ended abnormally (state FAILURE)", "internal"),
        ),
    ],
)
def test_outcome_of_a_stored_result(
    meta: dict[str, object] | None, expected: tuple[LineOutcome, str, str] | None
) -> None:
    assert outcome_of(meta) == expected


def test_requested_at_is_stable_and_in_file_order() -> None:
    record = MigrationRecord("m1", "f", "csv", "0", "r", created_at=1_767_225_600.0)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert requested_at(record, 2) == requested_at(record, 2)
    assert start < requested_at(record, 2) < requested_at(record, 3)
    assert (requested_at(record, 1_000_000) - start).total_seconds() == 1.0


def test_the_store_counts_each_line_once_and_keeps_the_highest_sent_line() -> None:
    store = MigrationStore(fakeredis.FakeRedis())
    store.begin(
        "m1", file="/f.csv", file_format="csv", sha256="ab", report="/r.csv", rows=5, valid=4
    )
    assert store.finish("m1", [(2, LineOutcome.DONE), (3, LineOutcome.INVALID)]) == 2
    assert store.finish("m1", [(2, LineOutcome.DONE), (4, LineOutcome.FAILED)]) == 1
    assert store.finished_lines("m1", [1, 2, 3, 4, 5]) == [False, True, True, True, False]
    store.mark_sent_through("m1", 5)
    store.mark_sent_through("m1", 3)
    record = store.get("m1")
    assert record is not None
    assert (record.done, record.failed, record.invalid, record.sent_through) == (1, 1, 1, 5)
    assert record.as_dict()["remaining"] == 2
    assert not record.complete
    # A resumed run refreshes the file facts and keeps the counts.
    again = store.begin(
        "m1", file="/moved.csv", file_format="csv", sha256="ab", report="/r.csv", rows=5, valid=4
    )
    assert (again.file, again.done, again.created_at) == ("/moved.csv", 1, record.created_at)
    store.complete("m1")
    final = store.get("m1")
    assert final is not None and final.complete
    assert store.get("other") is None


def test_a_job_id_used_twice_makes_the_file_unusable(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text(
        "userId,default_source,job_id\ncus_A1,card_B1,j1\ncus_A2,card_B2,\ncus_A3,card_B3,j1\n",
        encoding="utf-8",
    )
    with pytest.raises(UnreadableFile, match="line 4: job_id repeats line 2's"):
        scan(path, FileFormat.CSV)


def test_the_sender_has_no_result_backend_whatever_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A Redis backend would subscribe to a pub/sub channel per job sent (memory grows).
    from celery.backends.base import DisabledBackend

    from producers.migrate.send import sender_app

    monkeypatch.setenv("CELERY_RESULT_BACKEND", "redis://127.0.0.1:1/0")
    assert isinstance(sender_app.__wrapped__().backend, DisabledBackend)


NOW = 1_000_000.0


def record_of(**fields: float) -> MigrationRecord:
    base = {"rows": 3, "valid": 3, "updated_at": NOW - 5}
    return MigrationRecord(
        "m1", "/f.csv", "csv", "0" * 64, "/f.csv.report.csv", **{**base, **fields}
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "state"),
    [
        ({"done": 3, "completed_at": NOW}, MigrationState.DONE),
        ({"done": 2, "failed": 1, "completed_at": NOW}, MigrationState.FAILED),
        ({"done": 2, "invalid": 1, "completed_at": NOW}, MigrationState.FAILED),
        ({"done": 1}, MigrationState.RUNNING),
        ({"done": 1, "updated_at": NOW - 61}, MigrationState.STALLED),
        ({"done": 1, "interrupted_at": NOW - 1}, MigrationState.STALLED),
    ],
)
def test_a_migrations_state_comes_from_its_record(
    fields: dict[str, float], state: MigrationState
) -> None:
    assert migration_state(record_of(**fields), NOW) is state


@pytest.mark.parametrize(
    ("state", "readers", "hint"),
    [
        (MigrationState.DONE, [], ""),
        (MigrationState.FAILED, [], "some rows failed or were invalid: see the report /f.csv"),
        (MigrationState.RUNNING, ["bulk@h"], ""),
        (
            MigrationState.RUNNING,
            [],
            "no worker reads queue cards.bulk: start one: celery -A worker worker -Q cards.bulk",
        ),
        (MigrationState.STALLED, ["bulk@h"], "its producer stopped: cards migrate resume m1"),
        (MigrationState.STALLED, [], "then cards migrate resume m1"),
    ],
)
def test_the_status_hint_names_the_next_step(
    state: MigrationState, readers: list[str], hint: str
) -> None:
    shown = status_hint(record_of(), state, "cards.bulk", readers)
    assert shown.startswith(hint) or hint in shown
    assert bool(shown) == bool(hint)


def test_readers_of_a_queue_from_active_queues_replies() -> None:
    replies = {
        "live@h": [{"name": "cards"}],
        "bulk@h": [{"name": "cards.bulk"}, {"name": "cards"}],
        "odd@h": None,
    }
    assert readers_of("cards.bulk", replies) == ["bulk@h"]
    assert readers_of("cards", replies) == ["bulk@h", "live@h"]
    assert readers_of("cards.bulk", None) == []


def test_a_ctrl_c_whose_exception_is_swallowed_still_stops_the_migration() -> None:
    """Python drops a KeyboardInterrupt raised inside a finalizer; the flag the
    migration's wait loop checks is set all the same, and cleared afterwards."""
    with _ctrl_c_always_stops():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises here, at once
            raise AssertionError("SIGINT did not interrupt")
        except KeyboardInterrupt:
            pass  # as a finalizer would swallow it
        assert INTERRUPTED.is_set()
    assert not INTERRUPTED.is_set()


def test_the_bar_shows_the_counts_and_the_rate(capsys: pytest.CaptureFixture[str]) -> None:
    with BarProgress("mig-1", 10, 2, 1) as bar:
        bar.update(10, 1)
    shown = capsys.readouterr().err
    assert "mig-1" in shown and "10/10" in shown and "failed or invalid 1" in shown
    assert "rows/s" in shown


def test_the_cards_command_imports_rich_only_for_the_bar() -> None:
    """rich is a fifth of the CLI's import time; only ``cards migrate``'s bar needs it."""
    found = subprocess.run(
        [sys.executable, "-c", "import sys, producers.cli; print('rich' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.strip() == "False"

"""`cards migrate` end to end: a real bulk worker, the emulator, Redis, the CLI as a process.

The migration's jobs go to the bulk queue, read here by a dedicated worker
(`-Q cards.bulk`); the session worker reads only the live queue. Each test
uses its own Redis database, so migrations and counts never mix.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import redis

from harness.processes import BIN, BULK_POOL, CeleryWorker, RedisServer, run_worker, wait_for
from harness.queues import queued_rows
from producers.migrate.report import REPORT_COLUMNS
from producers.migrate.send import default_migration_id
from producers.migrate.store import MigrationStore
from stripe_emulator.process import EmulatorProcess
from tests.integration.conftest import worker_env

BULK_QUEUE = "cards.bulk"
_databases = count(8)


@pytest.fixture(scope="module")
def bulk_db() -> int:
    return next(_databases)


@pytest.fixture(scope="module")
def bulk_worker(
    redis_server: RedisServer, emulator: EmulatorProcess, logs_dir: Path, bulk_db: int
) -> Iterator[CeleryWorker]:
    env = worker_env(redis_server.url(bulk_db), emulator.url)
    with run_worker(
        env,
        logs_dir / "bulk-worker.log",
        concurrency=4,
        name="bulk",
        extra_args=("-Q", BULK_QUEUE, *BULK_POOL),
    ) as process:
        yield process


def migrate(redis_url: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "cards"), "migrate", *args],
        env={**os.environ, "CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def migration_id(out: str) -> str:
    first = out.splitlines()[0]
    assert first.startswith("migration "), out
    return first.split()[1].rstrip(":")


def report_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_valid_rows_are_done_invalid_rows_reported_by_line_csv(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    bulk_worker: CeleryWorker,
    bulk_db: int,
    tmp_path: Path,
) -> None:
    good = emulator.admin.seed(3, cards_per_customer=2)
    other = emulator.admin.seed(1, cards_per_customer=1)[0]
    before = emulator.admin.ledger()["writes_applied_by_customer"]
    lines = [
        "userId,default_source,stripe_account",  # 1
        f"{good[0]['id']},{good[0]['cards'][1]},",  # 2
        "cus_bad!,card_x,",  # 3: invalid userId
        "",  # 4: blank, skipped
        f"{good[1]['id']},{good[1]['cards'][1]},",  # 5
        f'{good[2]["id"]},"card_multi\nline",',  # 6-7: quoted newline, invalid source
        f"{good[2]['id']},{other['cards'][0]},",  # 8: not attached -> failed
        f"{good[2]['id']},{good[2]['cards'][1]},acct",  # 9: invalid account
    ]
    source = tmp_path / "cards.csv"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")

    done = migrate(redis_server.url(bulk_db), "run", str(source), "--quiet", "--window", "2")

    assert done.returncode == 1, done.stderr
    assert "line 3: invalid job: userId" in done.stderr
    assert "line 6: invalid job: default_source" in done.stderr
    assert "line 9: invalid job: stripe_account" in done.stderr
    assert "Traceback" not in done.stderr
    assert "6 rows, 2 done, 1 failed, 3 invalid" in done.stdout
    rows = {int(r["line"]): r for r in report_rows(tmp_path / "cards.csv.report.csv")}
    assert sorted(rows) == [2, 3, 5, 6, 8, 9]
    assert rows[2]["status"] == rows[5]["status"] == "done"
    assert rows[2]["job_id"] == f"{migration_id(done.stdout)}:2"
    assert rows[3]["status"] == "invalid" and rows[3]["job_id"] == ""
    assert rows[8]["status"] == "failed" and rows[8]["kind"] == "not_attached"
    assert rows[2]["message"] == "Método de pago actualizado con éxito"
    after = emulator.admin.ledger()["writes_applied_by_customer"]
    for customer in good[:2]:
        assert after.get(customer["id"], 0) - before.get(customer["id"], 0) == 1
    assert after.get(good[2]["id"], 0) == before.get(good[2]["id"], 0)
    # Live traffic's queue saw none of it.
    assert redis.Redis.from_url(redis_server.url(bulk_db)).llen("cards") == 0


def test_jsonl_rows_are_numbered_by_line(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    bulk_worker: CeleryWorker,
    bulk_db: int,
    tmp_path: Path,
) -> None:
    customer = emulator.admin.seed(1, cards_per_customer=2)[0]
    source = tmp_path / "cards.jsonl"
    source.write_text(
        json.dumps({"userId": customer["id"], "default_source": customer["cards"][1]})
        + "\n\nnot json\n"
        + json.dumps({"userId": customer["id"], "default_source": 7})
        + "\n",
        encoding="utf-8",
    )
    report = tmp_path / "out.csv"

    done = migrate(
        redis_server.url(bulk_db), "run", str(source), "--quiet", "--report", str(report)
    )

    assert done.returncode == 1, done.stderr
    assert "line 3: invalid row: not JSON" in done.stderr
    assert "line 4: invalid job: default_source must be a string" in done.stderr
    statuses = {int(r["line"]): r["status"] for r in report_rows(report)}
    assert statuses == {1: "done", 3: "invalid", 4: "invalid"}


def test_rows_of_connected_accounts_are_set_on_their_account(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    bulk_worker: CeleryWorker,
    bulk_db: int,
    tmp_path: Path,
) -> None:
    [platform] = emulator.admin.seed(1, cards_per_customer=2)
    [connected] = emulator.admin.seed(1, cards_per_customer=2, account="acct_1RowsEngine")
    source = tmp_path / "accounts.jsonl"
    rows = [
        {"userId": platform["id"], "default_source": platform["cards"][1]},
        {
            "userId": connected["id"],
            "default_source": connected["cards"][1],
            "stripe_account": "acct_1RowsEngine",
        },
    ]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")

    done = migrate(redis_server.url(bulk_db), "run", str(source), "--quiet")

    assert done.returncode == 0, done.stderr
    assert "2 rows, 2 done" in done.stdout
    assert emulator.admin.get_customer(platform["id"])["default_source"] == platform["cards"][1]
    stored = emulator.admin.get_customer(connected["id"], account="acct_1RowsEngine")
    assert stored["default_source"] == connected["cards"][1]


def test_validate_only_sends_nothing(
    redis_server: RedisServer, emulator: EmulatorProcess, bulk_db: int, tmp_path: Path
) -> None:
    customer = emulator.admin.seed(1, cards_per_customer=2)[0]
    source = tmp_path / "check.csv"
    source.write_text(
        f"userId,default_source\n{customer['id']},{customer['cards'][1]}\n", encoding="utf-8"
    )
    writes = emulator.admin.ledger()["writes_applied_by_customer"].get(customer["id"], 0)

    valid = migrate(redis_server.url(bulk_db), "run", str(source), "--validate-only")
    source.write_text(source.read_text() + "cus_x,tok_visa\n", encoding="utf-8")
    invalid = migrate(redis_server.url(bulk_db), "run", str(source), "--validate-only")

    assert valid.returncode == 0, valid.stderr
    assert valid.stdout.strip() == "1 rows: 1 valid, 0 invalid"
    assert invalid.returncode == 1
    assert "line 3: invalid job: default_source" in invalid.stderr
    assert emulator.admin.ledger()["writes_applied_by_customer"].get(customer["id"], 0) == writes
    assert not (tmp_path / "check.csv.report.csv").exists()


def test_bad_input_is_one_line_and_exit_code_2(
    redis_server: RedisServer, bulk_db: int, tmp_path: Path
) -> None:
    no_header = tmp_path / "x.csv"
    no_header.write_text("cus_1,card_1\n", encoding="utf-8")
    unknown = tmp_path / "x.txt"
    unknown.write_text("", encoding="utf-8")
    good = tmp_path / "ok.csv"
    good.write_text("userId,default_source\ncus_1,card_1\n", encoding="utf-8")
    unwritable = str(tmp_path / "no-such-dir" / "report.csv")
    for args in (
        ["run", str(no_header)],
        ["run", str(unknown)],
        ["status", "m0000"],
        ["resume", "m0000"],
        ["run", str(good), "--report", unwritable],
    ):
        done = migrate(redis_server.url(bulk_db), *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1
        assert done.stderr.startswith("error: ")
    # Arguments no command takes: Typer's usage error, with the same exit code.
    for args in (["a", "b", "c"], ["run", str(good), "extra"], ["status"]):
        done = migrate(redis_server.url(bulk_db), *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)


def test_a_killed_migration_resumes_without_losing_or_doubling_a_row(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    bulk_worker: CeleryWorker,
    bulk_db: int,
    tmp_path: Path,
) -> None:
    customers: list[dict[str, Any]] = emulator.admin.seed(300, cards_per_customer=2)
    source = tmp_path / "many.csv"
    source.write_text(
        "userId,default_source\n" + "".join(f"{c['id']},{c['cards'][1]}\n" for c in customers),
        encoding="utf-8",
    )
    url = redis_server.url(bulk_db)
    env = {**os.environ, "CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url}
    producer = subprocess.Popen(
        [str(BIN / "cards"), "migrate", "run", str(source), "--quiet", "--window", "10"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    store = MigrationStore(redis.Redis.from_url(url))
    assert producer.stdout is not None
    first_line = producer.stdout.readline()
    ident = migration_id(first_line)

    def some_done() -> bool:
        record = store.get(ident)
        return record is not None and record.done >= 40

    wait_for(some_done, 60, "40 rows of the migration done")
    producer.send_signal(signal.SIGKILL)
    producer.wait(10)
    producer.stdout.close()
    assert producer.stderr is not None
    producer.stderr.close()
    killed_at = store.get(ident)
    assert killed_at is not None and killed_at.finished < 300

    status = migrate(url, "status", ident)
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["rows"] == 300 and shown["remaining"] > 0

    resumed = migrate(url, "resume", ident, "--quiet", "--window", "10")

    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert "300 rows, 300 done, 0 failed, 0 invalid" in resumed.stdout
    by_customer = emulator.admin.ledger()["writes_applied_by_customer"]
    assert [by_customer.get(c["id"], 0) for c in customers] == [1] * 300
    lines = [int(r["line"]) for r in report_rows(tmp_path / "many.csv.report.csv")]
    assert set(lines) == set(range(2, 302))  # every row reported (a kill may repeat one)

    again = migrate(url, "run", str(source), "--quiet")
    assert again.returncode == 0, again.stderr
    assert "300 already finished" in again.stdout
    assert emulator.admin.ledger()["writes_applied_by_customer"] == by_customer


def test_a_resume_after_a_kill_before_the_first_row_writes_the_report_header(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    bulk_worker: CeleryWorker,
    bulk_db: int,
    tmp_path: Path,
) -> None:
    customer = emulator.admin.seed(1, cards_per_customer=2)[0]
    source = tmp_path / "header.csv"
    source.write_text(
        f"userId,default_source\n{customer['id']},{customer['cards'][1]}\n", encoding="utf-8"
    )
    report = tmp_path / "header.csv.report.csv"
    url = redis_server.url(bulk_db)
    # What a run killed before its first line leaves: its record, and an empty report.
    ident = default_migration_id(hashlib.sha256(source.read_bytes()).hexdigest())
    MigrationStore(redis.Redis.from_url(url)).begin(
        ident,
        file=str(source),
        file_format="csv",
        sha256=hashlib.sha256(source.read_bytes()).hexdigest(),
        report=str(report),
        rows=1,
        valid=1,
    )
    report.write_text("", encoding="utf-8")

    resumed = migrate(url, "resume", ident, "--quiet")

    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert report.read_text(encoding="utf-8").splitlines()[0] == ",".join(REPORT_COLUMNS)
    assert [r["status"] for r in report_rows(report)] == ["done"]


def test_a_finished_migration_run_again_shows_the_same_counts_on_the_bar_and_summary(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    bulk_worker: CeleryWorker,
    bulk_db: int,
    tmp_path: Path,
) -> None:
    customer, other = emulator.admin.seed(2, cards_per_customer=2)
    source = tmp_path / "again.csv"
    source.write_text(
        "userId,default_source\n"
        f"{customer['id']},{customer['cards'][1]}\n"
        f"{customer['id']},{other['cards'][0]}\n"  # not attached: failed
        "cus_bad!,card_1\n",  # invalid
        encoding="utf-8",
    )
    url = redis_server.url(bulk_db)
    first = migrate(url, "run", str(source), "--quiet")
    assert "3 rows, 1 done, 1 failed, 1 invalid" in first.stdout, first.stderr

    quiet = migrate(url, "run", str(source), "--quiet")
    bar = migrate(url, "run", str(source))

    assert "3 already finished" in quiet.stdout
    assert "3 rows, 1 done, 1 failed, 1 invalid" in quiet.stdout
    assert "3/3 finished, 2 failed or invalid" in quiet.stderr
    assert "3 rows, 1 done, 1 failed, 1 invalid" in bar.stdout
    assert "failed or invalid 2" in bar.stderr
    status = json.loads(migrate(url, "status", migration_id(first.stdout)).stdout)
    assert status["state"] == "failed"
    assert status["hint"].startswith("some rows failed or were invalid: see the report")


def test_a_migration_without_a_bulk_worker_says_so_and_ctrl_c_prints_the_resume_command(
    redis_server: RedisServer, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    url = redis_server.url(next(_databases))  # no worker reads this database's bulk queue
    customers = emulator.admin.seed(3, cards_per_customer=2)
    source = tmp_path / "unread.csv"
    source.write_text(
        "userId,default_source\n" + "".join(f"{c['id']},{c['cards'][1]}\n" for c in customers),
        encoding="utf-8",
    )
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        producer = subprocess.Popen(
            [str(BIN / "cards"), "migrate", "run", str(source), "--quiet"],
            env={**os.environ, "CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url},
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        assert producer.stdout is not None
        ident = migration_id(producer.stdout.readline())
        wait_for(
            lambda: "warning: no worker reads queue cards.bulk" in stderr_path.read_text(),
            15,
            "the producer to say that no worker reads the bulk queue",
        )
        assert "celery -A worker worker -Q cards.bulk" in stderr_path.read_text()
        wait_for(lambda: queued_rows(redis.Redis.from_url(url), BULK_QUEUE) > 0, 15, "jobs")

        running = migrate(url, "status", ident)
        assert running.returncode == 0, running.stderr
        view = json.loads(running.stdout)
        assert view["state"] == "running"
        assert view["queue"] == BULK_QUEUE and view["queue_depth"] >= 1
        assert view["workers"] == []
        assert view["hint"].startswith("no worker reads queue cards.bulk")
        assert view["last_progress_at"].startswith("20")

        producer.send_signal(signal.SIGINT)
        assert producer.wait(20) == 130
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.wait(10)
        if producer.stdout is not None:
            producer.stdout.close()
    said = stderr_path.read_text()
    assert f"continue with: cards migrate resume {ident}" in said
    assert "Traceback" not in said

    stalled = json.loads(migrate(url, "status", ident).stdout)
    assert stalled["state"] == "stalled"
    assert stalled["hint"].endswith(f"then cards migrate resume {ident}")
    listed = migrate(url, "list")
    assert listed.returncode == 0, listed.stderr
    shown = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(m["id"], m["state"], m["rows"]) for m in shown] == [(ident, "stalled", 3)]


def test_dry_run_reads_through_the_workers_and_writes_nothing(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    bulk_worker: CeleryWorker,
    bulk_db: int,
    tmp_path: Path,
) -> None:
    a, b = emulator.admin.seed(2, cards_per_customer=2)
    source = tmp_path / "dry.jsonl"
    rows = [
        {"userId": a["id"], "default_source": a["cards"][1]},  # 1: attached
        {"userId": a["id"], "default_source": b["cards"][0]},  # 2: b's card
        {"userId": "cus_NoSuchCustomer0", "default_source": a["cards"][0]},  # 3
        {"userId": b["id"], "default_source": b["payment_methods"][0]},  # 4: attached pm
        {"userId": a["id"], "default_source": b["payment_methods"][0]},  # 5: b's pm
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    url = redis_server.url(bulk_db)
    before = emulator.admin.ledger()["writes_applied_by_customer"]

    dry = migrate(url, "run", str(source), "--dry-run", "--quiet")

    assert dry.returncode == 1, dry.stderr
    assert "dry run, nothing written" in dry.stdout
    assert "5 rows, 2 done, 3 failed, 0 invalid" in dry.stdout
    found = {int(r["line"]): r for r in report_rows(tmp_path / "dry.jsonl.dryrun.csv")}
    assert {line: r["kind"] for line, r in found.items()} == {
        1: "",
        2: "not_attached",
        3: "no_such_customer",
        4: "",
        5: "not_attached",
    }
    assert found[1]["message"] == "would be applied"
    assert found[1]["job_id"].endswith(".dry:1")
    assert emulator.admin.ledger()["writes_applied_by_customer"] == before

    # The dry run finished no line of the real migration.
    real = migrate(url, "run", str(source), "--quiet")
    assert "0 already finished" in real.stdout
    assert "5 rows, 2 done, 3 failed" in real.stdout


def test_redis_never_holds_more_than_the_window(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    logs_dir: Path,
    bulk_db: int,
    tmp_path: Path,
) -> None:
    customers = emulator.admin.seed(30, cards_per_customer=2)
    source = tmp_path / "window.csv"
    source.write_text(
        "userId,default_source\n" + "".join(f"{c['id']},{c['cards'][1]}\n" for c in customers),
        encoding="utf-8",
    )
    url = redis_server.url(bulk_db)
    queue = "cards.bulk.window"  # no worker reads it until the producer has filled its window
    env = {
        **os.environ,
        "CELERY_BROKER_URL": url,
        "CELERY_RESULT_BACKEND": url,
        "CARDS_BULK_QUEUE": queue,
    }
    producer = subprocess.Popen(
        [str(BIN / "cards"), "migrate", "run", str(source), "--quiet", "--window", "5"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    broker = redis.Redis.from_url(url)
    wait_for(lambda: queued_rows(broker, queue) == 5, 60, "the window's 5 jobs on the queue")
    assert producer.poll() is None
    seen: list[int] = []

    def finished() -> bool:
        seen.append(queued_rows(broker, queue))
        return producer.poll() is not None

    worker_settings = worker_env(url, emulator.url)
    with run_worker(
        worker_settings,
        logs_dir / "window-worker.log",
        name="window",
        extra_args=("-Q", queue, *BULK_POOL),
    ):
        wait_for(finished, 90, "the migration to finish")
    out, err = producer.communicate()
    assert producer.returncode == 0, err
    assert "30 rows, 30 done" in out
    assert max(seen) <= 5

"""`cards migrate run --engine batch-api` end to end: the CLI as a process, the emulator's
Batch Jobs API, Redis, and a real bulk worker for what the batch jobs leave to the
per-row engine. The migration matrix of test_migration.py (valid, invalid, dry run,
resume after SIGKILL, connected accounts), then what only batch jobs do: superseded
rows, retryable lines, upload_timeout, timeout, cancel, and live jobs racing a batch."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from harness.processes import (
    BIN,
    BULK_POOL,
    REPO_ROOT,
    CeleryWorker,
    RedisServer,
    run_worker,
    wait_for,
)
from producers.migrate.store import MigrationStore
from stripe_emulator.process import EmulatorProcess
from tests.emulator.conftest import SDK_HTTPX_WARNING
from tests.integration.conftest import API_KEY, worker_env

BULK_QUEUE = "cards.bulk"
DB = 13

pytestmark = pytest.mark.filterwarnings(SDK_HTTPX_WARNING)


@pytest.fixture(scope="module")
def workers(
    redis_server: RedisServer, emulator: EmulatorProcess, logs_dir: Path
) -> Iterator[CeleryWorker]:
    env = worker_env(redis_server.url(DB), emulator.url)
    with run_worker(
        env,
        logs_dir / "batch-bulk-worker.log",
        concurrency=4,
        name="batchbulk",
        extra_args=("-Q", f"{BULK_QUEUE},cards", *BULK_POOL),
    ) as process:
        yield process


@pytest.fixture(autouse=True)
def fast_batches(emulator: EmulatorProcess) -> Iterator[None]:
    emulator.admin.configure(batch_lines_per_second=2000.0, batch_upload_ttl_seconds=300.0)
    yield
    emulator.admin.configure(
        batch_lines_per_second=100.0,
        batch_upload_ttl_seconds=300.0,
        batch_timeout_at_fraction=0.0,
        batch_lose_uploads=0,
    )


def env_for(redis_server: RedisServer, emulator: EmulatorProcess) -> dict[str, str]:
    url = redis_server.url(DB)
    return {
        **os.environ,
        "CELERY_BROKER_URL": url,
        "CELERY_RESULT_BACKEND": url,
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_API_BASE": emulator.url,
        "CARDS_BATCH_POLL_MAX_SECONDS": "0.5",
    }


def migrate(
    redis_server: RedisServer, emulator: EmulatorProcess, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "cards"), "migrate", *args],
        env=env_for(redis_server, emulator),
        capture_output=True,
        text=True,
        timeout=120,
    )


def start_batch_migration(source: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """``cards migrate run SOURCE --engine batch-api --quiet``, in the background."""
    return subprocess.Popen(
        [str(BIN / "cards"), "migrate", "run", str(source), "--engine", "batch-api", "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def report(path: Path) -> dict[int, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return {int(row["line"]): row for row in csv.DictReader(handle)}


def writes(emulator: EmulatorProcess) -> dict[str, int]:
    return dict(emulator.admin.ledger(events=False)["writes_applied_by_customer"])


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(["userId,default_source,stripe_account", *rows]) + "\n")
    return path


def test_valid_invalid_superseded_failed_and_retryable_rows(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    workers: CeleryWorker,
    tmp_path: Path,
) -> None:
    c = emulator.admin.seed(4, cards_per_customer=2)
    [other] = emulator.admin.seed(1, cards_per_customer=1)
    emulator.admin.script_faults(c[3]["id"], ["error_500"])
    before = writes(emulator)
    source = write_csv(
        tmp_path / "cards.csv",
        [
            f"{c[0]['id']},{c[0]['cards'][1]},",  # 2: done by the batch job
            "cus_bad!,card_x,",  # 3: invalid
            f"{c[1]['id']},{c[1]['cards'][0]},",  # 4: superseded by line 6
            f"{c[2]['id']},{other['cards'][0]},",  # 5: not attached: failed, Stripe's message
            f"{c[1]['id']},{c[1]['cards'][1]},",  # 6: done
            f"{c[3]['id']},{c[3]['cards'][1]},",  # 7: a 500 in the batch, done per-row
        ],
    )

    done = migrate(redis_server, emulator, "run", str(source), "--engine", "batch-api", "--quiet")

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "6 rows, 3 done, 1 failed, 1 invalid, 1 superseded" in done.stdout
    rows = report(tmp_path / "cards.csv.report.csv")
    assert sorted(rows) == [2, 3, 4, 5, 6, 7]
    assert [rows[n]["status"] for n in (2, 3, 4, 5, 6, 7)] == [
        "done",
        "invalid",
        "superseded",
        "failed",
        "done",
        "done",
    ]
    assert rows[2]["message"].startswith("default card set by batch job batchv2_")
    assert rows[4]["message"] == "superseded by line 6, the newest row for this customer"
    assert rows[5]["message"] == (
        f"Customer {c[2]['id']} does not have a linked source with ID {other['cards'][0]}."
    )
    assert rows[5]["kind"] == "resource_missing"
    assert rows[7]["message"] == "Método de pago actualizado con éxito"  # the per-row worker
    after = writes(emulator)
    for customer in (c[0], c[1], c[3]):
        assert after.get(customer["id"], 0) - before.get(customer["id"], 0) == 1
    assert after.get(c[2]["id"], 0) == before.get(c[2]["id"], 0)
    assert emulator.admin.get_customer(c[1]["id"])["default_source"] == c[1]["cards"][1]


def test_jsonl_with_connected_accounts_runs_one_batch_job_per_account(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    workers: CeleryWorker,
    tmp_path: Path,
) -> None:
    platform = emulator.admin.seed(2, cards_per_customer=2)
    first = emulator.admin.seed(2, cards_per_customer=2, account="acct_1BatchFirst")
    second = emulator.admin.seed(1, cards_per_customer=2, account="acct_1BatchSecond")
    lines = [{"userId": x["id"], "default_source": x["cards"][1]} for x in platform]
    lines += [
        {"userId": x["id"], "default_source": x["cards"][1], "stripe_account": "acct_1BatchFirst"}
        for x in first
    ]
    lines += [
        {"userId": x["id"], "default_source": x["cards"][1], "stripe_account": "acct_1BatchSecond"}
        for x in second
    ]
    source = tmp_path / "cards.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))

    done = migrate(redis_server, emulator, "run", str(source), "--engine", "batch-api", "--quiet")

    assert done.returncode == 0, done.stderr
    assert "5 rows, 5 done, 0 failed, 0 invalid" in done.stdout
    jobs = {}
    for text in done.stderr.splitlines():
        if ": batch job " in text and " complete " in text:
            label, rest = text.split(": ", 2)[1:]
            jobs[label] = rest.split()[2]
    assert set(jobs) == {"platform", "acct_1BatchFirst", "acct_1BatchSecond"}, done.stderr
    assert len(set(jobs.values())) == 3
    for customer in platform:
        assert emulator.admin.get_customer(customer["id"])["default_source"] == customer["cards"][1]
    for customer in first:
        stored = emulator.admin.get_customer(customer["id"], account="acct_1BatchFirst")
        assert stored["default_source"] == customer["cards"][1]
    assert set(report(tmp_path / "cards.jsonl.report.csv")) == {1, 2, 3, 4, 5}


def test_without_a_stripe_key_or_with_another_engine_it_exits_2_and_sends_nothing(
    redis_server: RedisServer, emulator: EmulatorProcess, workers: CeleryWorker, tmp_path: Path
) -> None:
    [customer] = emulator.admin.seed(1, cards_per_customer=2)
    source = write_csv(tmp_path / "nokey.csv", [f"{customer['id']},{customer['cards'][1]},"])
    env = {k: v for k, v in env_for(redis_server, emulator).items() if k != "STRIPE_API_KEY"}
    before = emulator.admin.ledger(events=False)["writes_applied_total"]
    command = [str(BIN / "cards"), "migrate", "run", str(source), "--engine", "batch-api"]

    no_key = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    rows_first = migrate(redis_server, emulator, "run", str(source), "--validate-only")
    started = subprocess.run(
        [str(BIN / "cards"), "migrate", "run", str(source), "--dry-run", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    switched = migrate(
        redis_server, emulator, "run", str(source), "--dry-run", "--engine", "batch-api"
    )

    assert no_key.returncode == 2, no_key.stderr
    assert "set STRIPE_API_KEY" in no_key.stderr and "Traceback" not in no_key.stderr
    assert rows_first.returncode == 0
    assert started.returncode in (0, 1), started.stderr  # a rows dry run, recorded
    assert switched.returncode == 2, switched.stderr
    assert "was started with --engine rows" in switched.stderr
    assert emulator.admin.ledger(events=False)["writes_applied_total"] == before


def test_validate_only_and_dry_run_create_no_batch_job_and_write_nothing(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    workers: CeleryWorker,
    tmp_path: Path,
) -> None:
    c = emulator.admin.seed(2, cards_per_customer=2)
    source = write_csv(
        tmp_path / "dry.csv",
        [
            f"{c[0]['id']},{c[0]['cards'][0]},",
            f"{c[0]['id']},{c[0]['cards'][1]},",
            f"{c[1]['id']},card_missing1,",
        ],
    )
    before = emulator.admin.ledger(events=False)["writes_applied_total"]

    checked = migrate(
        redis_server, emulator, "run", str(source), "--engine", "batch-api", "--validate-only"
    )
    dry = migrate(
        redis_server, emulator, "run", str(source), "--engine", "batch-api", "--dry-run", "--quiet"
    )

    assert checked.returncode == 0 and "3 rows: 3 valid, 0 invalid" in checked.stdout
    assert dry.returncode == 1, dry.stderr
    assert "dry run, nothing written" in dry.stdout
    assert "batch job" not in dry.stderr
    rows = report(tmp_path / "dry.csv.dryrun.csv")
    assert rows[2]["status"] == "superseded"
    assert rows[3]["status"] == "done"
    assert rows[4]["status"] == "failed"
    assert emulator.admin.ledger(events=False)["writes_applied_total"] == before


def test_a_killed_batch_migration_resumes_from_its_stored_batch_job(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    workers: CeleryWorker,
    tmp_path: Path,
) -> None:
    emulator.admin.configure(batch_lines_per_second=40.0)
    c = emulator.admin.seed(120, cards_per_customer=2)
    source = write_csv(tmp_path / "kill.csv", [f"{x['id']},{x['cards'][1]}," for x in c])
    before = writes(emulator)
    state = redis.Redis.from_url(redis_server.url(DB))
    producer = start_batch_migration(source, env_for(redis_server, emulator))
    try:
        wait_for(lambda: _stored_job(state) is not None, 30, "the batch job id to be stored")
        job_id = _stored_job(state)
        wait_for(
            lambda: emulator.admin.ledger(events=False)["writes_applied_total"] > 0,
            30,
            "the batch job to start",
        )
        producer.send_signal(signal.SIGKILL)
    finally:
        producer.wait(10)
    first = producer.stdout.read() if producer.stdout else ""
    migration = first.splitlines()[0].split()[1].rstrip(":")

    status = json.loads(migrate(redis_server, emulator, "status", migration).stdout)
    resumed = migrate(redis_server, emulator, "resume", migration, "--quiet")

    assert status["engine"] == "batch-api" and status["batch_jobs"] == {"-": job_id}
    assert resumed.returncode == 0, resumed.stderr
    assert f"batch job {job_id}" in resumed.stderr  # polled, not created again
    assert "120 rows, 120 done" in resumed.stdout
    assert set(report(tmp_path / "kill.csv.report.csv")) == set(range(2, 122))
    after = writes(emulator)
    assert all(after.get(x["id"], 0) - before.get(x["id"], 0) == 1 for x in c)


def _stored_job(state: redis.Redis) -> str | None:
    """The batch job id a running migration stored, if any."""
    for record in MigrationStore(state).all():
        for job_id, _ in MigrationStore(state).batch_jobs(record.id).values():
            return job_id
    return None


def test_a_lost_upload_and_a_timeout_are_sent_again(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    workers: CeleryWorker,
    tmp_path: Path,
) -> None:
    emulator.admin.configure(
        batch_lose_uploads=1, batch_upload_ttl_seconds=1.0, batch_timeout_at_fraction=0.5
    )
    c = emulator.admin.seed(10, cards_per_customer=2)
    source = write_csv(tmp_path / "again.csv", [f"{x['id']},{x['cards'][1]}," for x in c])
    before = writes(emulator)

    done = migrate(redis_server, emulator, "run", str(source), "--engine", "batch-api", "--quiet")

    assert done.returncode == 0, done.stderr
    assert "upload_timeout" in done.stderr and " timeout " in done.stderr
    assert "10 rows, 10 done" in done.stdout
    after = writes(emulator)
    assert all(after.get(x["id"], 0) - before.get(x["id"], 0) == 1 for x in c)


def test_cancel_stops_the_batch_job_and_resume_sends_the_rest(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    workers: CeleryWorker,
    tmp_path: Path,
) -> None:
    emulator.admin.configure(batch_lines_per_second=4.0)
    c = emulator.admin.seed(100, cards_per_customer=2)
    source = write_csv(tmp_path / "cancel.csv", [f"{x['id']},{x['cards'][1]}," for x in c])
    state = redis.Redis.from_url(redis_server.url(DB))
    producer = start_batch_migration(source, env_for(redis_server, emulator))
    wait_for(lambda: _stored_job(state) is not None, 30, "the batch job id to be stored")
    wait_for(
        lambda: emulator.admin.ledger(events=False)["writes_applied_total"] > 0,
        30,
        "the batch job to start",
    )
    first_line = producer.stdout.readline() if producer.stdout else ""
    migration = first_line.split()[1].rstrip(":")

    canceled = migrate(redis_server, emulator, "cancel", migration)
    _out, err = producer.communicate(timeout=60)

    assert canceled.returncode == 0, canceled.stderr
    assert "canceled" in canceled.stdout or "cancelling" in canceled.stdout, err
    assert "was canceled" in err
    assert producer.returncode == 130, err
    assert f"cards migrate resume {migration}" in err
    emulator.admin.configure(batch_lines_per_second=2000.0)
    resumed = migrate(redis_server, emulator, "resume", migration, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert "100 rows, 100 done" in resumed.stdout
    for customer in c:
        assert emulator.admin.get_customer(customer["id"])["default_source"] == customer["cards"][1]


def test_live_jobs_racing_a_batch_job_leave_every_customer_on_its_newest_request(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    workers: CeleryWorker,
    tmp_path: Path,
) -> None:
    """Newest request wins across engines: live jobs made after the migration started
    win over its rows; a live job made before it started loses to them."""
    emulator.admin.configure(batch_lines_per_second=8.0)
    c = emulator.admin.seed(60, cards_per_customer=3)
    source = write_csv(tmp_path / "race.csv", [f"{x['id']},{x['cards'][1]}," for x in c])
    env = env_for(redis_server, emulator)
    old_request = datetime.now(UTC).isoformat()  # before the migration starts
    producer = start_batch_migration(source, env)
    state = redis.Redis.from_url(redis_server.url(DB))
    wait_for(lambda: _stored_job(state) is not None, 30, "the batch job to be created")
    live = _live_sender(env)
    newer = c[:30]  # live requests made now: newer than the migration's rows
    for customer in newer:
        live({"userId": customer["id"], "default_source": customer["cards"][2]})
    for customer in c[30:40]:  # made before the migration started: older than its rows
        live(
            {
                "userId": customer["id"],
                "default_source": customer["cards"][0],
                "requested_at": old_request,
            }
        )
    out, err = producer.communicate(timeout=120)

    assert producer.returncode == 0, err
    assert "newer live requests applied again after the batch jobs (0 failed)" in out, err
    rows = report(tmp_path / "race.csv.report.csv")
    newer_rows = [rows[n] for n in range(2, 32)]  # c[:30]
    # Superseded, with the live request applied again; "done" only for a live job that
    # ran after the batch job ended (it then won through the ordering guard).
    assert {row["status"] for row in newer_rows} <= {"superseded", "done"}
    assert any("applied again as job" in row["message"] for row in newer_rows)
    assert {rows[n]["status"] for n in range(32, 62)} == {"done"}
    for customer in newer:
        stored = emulator.admin.get_customer(customer["id"])
        assert stored["default_source"] == customer["cards"][2], customer["id"]
    for customer in c[30:]:
        stored = emulator.admin.get_customer(customer["id"])
        assert stored["default_source"] == customer["cards"][1], customer["id"]


def _live_sender(env: dict[str, str]) -> Any:
    """Send live jobs as an upstream service does, through a stock Celery client."""
    app = Celery(broker=env["CELERY_BROKER_URL"])
    app.conf.task_default_queue = "cards"

    def send(kwargs: dict[str, str]) -> None:
        app.send_task("cards.set_default_card", kwargs=kwargs, queue="cards")

    return send


def readme_batch_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### The batch-api engine (preview)", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_the_readme_batch_commands_run_as_printed(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    workers: CeleryWorker,
    tmp_path: Path,
) -> None:
    """Each command of the README's block, in a folder holding ``cards.csv``; the example
    migration id is the one the first command printed."""
    c = emulator.admin.seed(3, cards_per_customer=2)
    write_csv(tmp_path / "cards.csv", [f"{x['id']},{x['cards'][1]}," for x in c])
    commands = readme_batch_commands()
    assert [command.split()[:3] for command in commands] == [
        ["cards", "migrate", "run"],
        ["cards", "migrate", "cancel"],
        ["cards", "migrate", "resume"],
    ]
    printed_id = commands[1].split()[-1]
    migration = None
    for command in commands:
        if migration is not None:
            command = command.replace(printed_id, migration)
        done = subprocess.run(
            command.replace("cards ", f"{BIN / 'cards'} ", 1).split(),
            env=env_for(redis_server, emulator),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, (command, done.stderr)
        migration = migration or done.stdout.splitlines()[0].split()[1].rstrip(":")
    assert "3 rows, 3 done" in done.stdout
    for customer in c:
        assert emulator.admin.get_customer(customer["id"])["default_source"] == customer["cards"][1]

"""Bulk batches (``cards.set_default_cards``) on a real worker: every row is a job of its own."""

from __future__ import annotations

import os
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from cards.batches import BATCH_TASK_NAME
from cards.settings import get_settings
from harness.processes import BIN, BULK_POOL, run_redis, run_worker, start_worker, wait_for
from producers import get_result
from producers.migrate.store import MigrationStore
from stripe_emulator.process import EmulatorProcess
from tests.integration.conftest import applied_writes, customer_writes, worker_env
from worker.idempotency import idempotency_key

RESULT_TIMEOUT = 60
BULK_QUEUE = get_settings().bulk_queue


def _row(customer: dict[str, Any], card: int = 1, **fields: Any) -> dict[str, Any]:
    return {
        "userId": customer["id"],
        "default_source": customer["cards"][card],
        "job_id": f"batch-test:{uuid.uuid4()}",
        **fields,
    }


def _run_batch(app: Celery, kwargs: dict[str, Any]) -> dict[str, Any]:
    batch_id = str(uuid.uuid4())
    app.send_task(BATCH_TASK_NAME, kwargs=kwargs, task_id=batch_id)
    return dict(get_result(batch_id, timeout=RESULT_TIMEOUT, app=app))


@pytest.mark.usefixtures("worker")
def test_each_row_gets_its_own_envelope_under_its_job_id(
    app: Celery, emulator: EmulatorProcess
) -> None:
    customers = emulator.admin.seed(6, cards_per_customer=2)
    rows = [_row(c) for c in customers]
    rows.append({**_row(customers[0]), "userId": "cust_wrong"})

    summary = _run_batch(app, {"jobs": rows})

    assert summary["status"] is True
    assert summary["data"] == {"rows": 7, "answered": 7, "sent_alone": 0, "skipped": 0}
    for row, customer in zip(rows, customers, strict=False):
        envelope = get_result(row["job_id"], timeout=0, app=app)
        assert envelope["status"] is True, envelope["message"]
        assert envelope["data"] is not None
        assert envelope["data"]["default_source"] == customer["cards"][1]
        assert applied_writes(emulator, idempotency_key(row["job_id"], 0)) == 1
    invalid = get_result(rows[-1]["job_id"], timeout=0, app=app)
    assert invalid["status"] is False
    assert invalid["message"] == 'invalid job: userId must start with "cus_"'


@pytest.mark.usefixtures("worker")
def test_a_row_that_must_retry_leaves_the_batch_and_succeeds_alone(
    app: Celery, emulator: EmulatorProcess
) -> None:
    customers = emulator.admin.seed(3, cards_per_customer=2)
    emulator.admin.script_faults(customers[1]["id"], ["error_500"])
    rows = [_row(c) for c in customers]

    summary = _run_batch(app, {"jobs": rows})

    assert summary["data"]["answered"] == 2
    assert summary["data"]["sent_alone"] == 1
    retried = get_result(rows[1]["job_id"], timeout=RESULT_TIMEOUT, app=app)
    assert retried["status"] is True, retried["message"]
    # The saved 500 sits under generation 0; the retry wrote under generation 1, once.
    assert applied_writes(emulator, idempotency_key(rows[1]["job_id"], 1)) == 1
    assert customer_writes(emulator, customers[1]["id"]) == 1


@pytest.mark.usefixtures("worker")
def test_a_batch_delivered_again_skips_the_rows_already_answered(
    app: Celery, emulator: EmulatorProcess
) -> None:
    customers = emulator.admin.seed(4, cards_per_customer=2)
    rows = [_row(c) for c in customers]
    _run_batch(app, {"jobs": rows})

    again = _run_batch(app, {"jobs": rows})

    assert again["data"] == {"rows": 4, "answered": 0, "sent_alone": 0, "skipped": 4}
    assert all(customer_writes(emulator, c["id"]) == 1 for c in customers)


@pytest.mark.usefixtures("worker")
def test_two_rows_for_one_customer_apply_in_order(app: Celery, emulator: EmulatorProcess) -> None:
    [customer] = emulator.admin.seed(1, cards_per_customer=2)
    now = datetime.now(UTC)
    older = _row(customer, 0, requested_at=(now - timedelta(seconds=1)).isoformat())
    newer = _row(customer, 1, requested_at=now.isoformat())

    summary = _run_batch(app, {"jobs": [newer, older]})

    assert summary["data"]["answered"] == 2
    assert get_result(newer["job_id"], timeout=0, app=app)["status"] is True
    superseded = get_result(older["job_id"], timeout=0, app=app)
    # Whichever ran first, the customer ends on the newer request's card.
    if superseded["status"] is False:
        assert superseded["message"] == "superseded by a newer request"
    state = emulator.admin.get_customer(customer["id"])
    assert state["default_source"] == customer["cards"][1]
    assert emulator.admin.ledger()["max_concurrent_writes_by_customer"][customer["id"]] == 1


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"jobs": []}, "jobs must be a non-empty JSON array of job objects"),
        ({"jobs": "x"}, "jobs must be a non-empty JSON array of job objects"),
        ({"jobs": [{"userId": "cus_a"}]}, "jobs[0].job_id is required"),
        (
            {"jobs": [], "extra": 1},
            "a batch has only the fields 'jobs' and 'migration_id', not 'extra'",
        ),
        ({"jobs": [{"job_id": "j"}], "migration_id": "bad id!"}, "migration_id must be"),
    ],
)
def test_a_malformed_batch_is_refused_without_a_stripe_call(
    app: Celery, emulator: EmulatorProcess, kwargs: dict[str, Any], message: str
) -> None:
    before = emulator.admin.ledger()["writes_applied_total"]
    summary = _run_batch(app, kwargs)
    assert summary["status"] is False
    assert summary["message"].startswith("invalid job: " + message)
    assert emulator.admin.ledger()["writes_applied_total"] == before


def test_a_bulk_worker_killed_mid_batch_loses_no_row_and_doubles_none(
    emulator: EmulatorProcess, logs_dir: Path, tmp_path: Path
) -> None:
    customers = emulator.admin.seed(400, cards_per_customer=2)
    source = tmp_path / "kill.csv"
    source.write_text(
        "userId,default_source\n" + "".join(f"{c['id']},{c['cards'][1]}\n" for c in customers),
        encoding="utf-8",
    )
    with run_redis() as server:
        url = server.url()
        env = worker_env(
            url,
            emulator.url,
            # A dead worker's batches and customer locks come back within seconds;
            # the budget keeps the migration running long enough to be cut.
            CARDS_VISIBILITY_TIMEOUT_SECONDS="5",
            CARDS_UNACKED_RESTORE_INTERVAL_SECONDS="1",
            CARDS_CUSTOMER_LOCK_SECONDS="5",
            CARDS_RATE_LIMITS=f"{BULK_QUEUE}=100",
        )
        doomed = start_worker(
            env,
            logs_dir / "batch-kill-1.log",
            name="doomed",
            extra_args=("-Q", BULK_QUEUE, *BULK_POOL),
        )
        producer = subprocess.Popen(
            [
                str(BIN / "cards"),
                "migrate",
                "run",
                str(source),
                "--quiet",
                "--id",
                "kill-mid-batch",
            ],
            env={**os.environ, "CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        store = MigrationStore(server.client())

        def some_done() -> bool:
            record = store.get("kill-mid-batch")
            return record is not None and record.done >= 100

        wait_for(some_done, 60, "100 rows of the migration done")
        doomed.kill()
        assert server.client().hlen("unacked") > 0  # it died holding batches
        with run_worker(
            env,
            logs_dir / "batch-kill-2.log",
            name="heir",
            extra_args=("-Q", BULK_QUEUE, *BULK_POOL),
        ):
            out, err = producer.communicate(timeout=120)

    assert producer.returncode == 0, err
    assert "400 rows, 400 done, 0 failed, 0 invalid" in out
    by_customer = emulator.admin.ledger()["writes_applied_by_customer"]
    assert [by_customer.get(c["id"], 0) for c in customers] == [1] * 400

"""A job whose retries run out is kept as a dead letter, and replays without doubling."""

from __future__ import annotations

import json
from typing import Any

import pytest
from celery import Celery

from harness.processes import RedisServer
from producers import enqueue_set_default_card, get_result
from stripe_emulator.process import EmulatorProcess
from tests.integration.conftest import applied_writes, cards_cli, customer_writes
from worker.idempotency import idempotency_key


@pytest.mark.usefixtures("worker")
def test_exhausted_job_is_dead_lettered_then_replayed_once(
    app: Celery,
    emulator: EmulatorProcess,
    redis_server: RedisServer,
    customers: list[dict[str, Any]],
) -> None:
    customer = customers[0]
    target = customer["cards"][1]
    emulator.admin.script_faults(customer["id"], ["rate_limit"] * 50)
    job_id = enqueue_set_default_card(customer["id"], target, app=app)
    first = get_result(job_id, timeout=60, app=app)
    assert first["status"] is False
    assert first["data"] is not None and first["data"]["kind"] == "stripe_unavailable"

    listed = cards_cli(redis_server.url(), "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    [row] = [r for r in rows if r["job_id"] == job_id]
    assert row["userId"] == customer["id"]
    assert row["default_source"] == target
    assert row["message"].startswith("Stripe unavailable")

    emulator.admin.clear_faults(customer["id"])
    replayed = cards_cli(redis_server.url(), "dlq", "replay", job_id)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.splitlines() == ["replayed 1 job(s)", job_id]

    second = get_result(job_id, timeout=30, app=app)
    assert second["status"] is True
    assert second["data"] is not None and second["data"]["default_source"] == target
    assert applied_writes(emulator, idempotency_key(job_id)) == 1
    assert customer_writes(emulator, customer["id"]) == 1
    after = cards_cli(redis_server.url(), "dlq", "list")
    assert job_id not in after.stdout


def test_replay_of_an_unknown_id_is_a_clear_error(redis_server: RedisServer) -> None:
    done = cards_cli(redis_server.url(), "dlq", "replay", "no-such-dead-letter")
    assert done.returncode == 2
    assert done.stderr == "error: not in the dead-letter store: no-such-dead-letter\n"


def test_purge_removes_dead_letters(redis_server: RedisServer) -> None:
    done = cards_cli(redis_server.url(), "dlq", "purge")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("purged ")
    assert cards_cli(redis_server.url(), "dlq", "list").stdout == ""

"""The batch-api engine's parts: the plan (newest row per customer, lines per account),
its pure decisions, and the settle script that orders batch rows against live jobs."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import fakeredis
import pytest

from cards.customer_keys import customer_key, ordering_keys
from cards.lua_scripts import read_lua
from producers.migrate.batch_engine import poll_delays, reapply_job_id, settle_action
from producers.migrate.batch_format import customer_update, read_result
from producers.migrate.batch_plan import PLATFORM, BatchPlan, is_finished, line_id, line_of
from producers.migrate.scan import FileFormat, Row
from worker.ordering import AppliedRequest, CustomerGuard

VERSION = "2026-09-30.preview"


def plan_of(tmp_path: Path, lines: list[str], finished: bytes = b"") -> tuple[BatchPlan, list[Row]]:
    source = tmp_path / "m.csv"
    source.write_text("\n".join(["userId,default_source,stripe_account", *lines]) + "\n")
    plan = BatchPlan("m1", tmp_path)
    invalid: list[Row] = []
    plan.load(source, FileFormat.CSV, finished, invalid.append)
    return plan, invalid


def test_the_last_row_of_a_customer_wins_per_account_and_the_rest_are_superseded(
    tmp_path: Path,
) -> None:
    plan, invalid = plan_of(
        tmp_path,
        [
            "cus_A,card_1,",  # 2: superseded by 5
            "cus_A,card_2,acct_1X",  # 3: another account's customer A
            "cus_bad!,card_1,",  # 4: invalid
            "cus_A,card_3,",  # 5
            "cus_B,pm_4,",  # 6
        ],
    )
    with plan:
        assert [row.line for row in invalid] == [4]
        assert [(row.line, by) for row, by in plan.superseded()] == [(2, 5)]
        assert plan.accounts() == [PLATFORM, "acct_1X"]
        path, count = plan.write_lines(PLATFORM, VERSION)
        lines = [json.loads(raw) for raw in path.read_text().splitlines()]
        assert count == 2
        assert [(x["id"], x["path_params"]["customer"], x["context"]) for x in lines] == [
            ("m1:5", "cus_A", None),
            ("m1:6", "cus_B", None),
        ]
        assert lines[1]["params"] == {"invoice_settings": {"default_payment_method": "pm_4"}}
        _, connected = plan.write_lines("acct_1X", VERSION)
        assert connected == 1
        assert plan.rows([3, 6, 99]).keys() == {3, 6}
        plan.mark_finished([5])
        assert plan.unfinished(PLATFORM) == 1


def test_finished_lines_are_neither_sent_nor_reported_again(tmp_path: Path) -> None:
    bitmap = bytearray(1)
    bitmap[0] |= 0x80 >> 2  # line 2 finished by an earlier run
    plan, _ = plan_of(tmp_path, ["cus_A,card_1,", "cus_A,card_2,"], bytes(bitmap))
    with plan:
        assert list(plan.superseded()) == []
        _, count = plan.write_lines(PLATFORM, VERSION)
        assert count == 1


@pytest.mark.parametrize(
    ("bitmap", "line", "expected"),
    [(b"", 0, False), (b"\x80", 0, True), (b"\x01", 7, True), (b"\x01", 8, False)],
)
def test_a_redis_bitmap_is_read_most_significant_bit_first(
    bitmap: bytes, line: int, expected: bool
) -> None:
    assert is_finished(bitmap, line) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("m1:7", 7), ("m1:x", None), ("m2:7", None), (None, None), ("7", None), ("a:m1:7", None)],
)
def test_a_result_names_a_line_of_this_migration_or_none(text: str | None, expected: int) -> None:
    assert line_of("m1", text) == expected
    assert line_of("m1", line_id("m1", 7)) == 7


def test_polls_double_up_to_the_cap() -> None:
    assert list(islice(poll_delays(0.5, 3.0), 5)) == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_reapplied_request_has_a_stable_job_id_of_its_own() -> None:
    assert reapply_job_id("m1", 5) == reapply_job_id("m1", 5) != reapply_job_id("m1", 6)
    assert len(reapply_job_id("m" * 116, 10**9)) <= 128


def test_a_failed_line_keeps_stripes_code() -> None:
    raw = '{"id": "m:2", "status": 400, "response": {"error": {"message": "No such source", "code": "resource_missing"}}}'  # noqa: E501
    result = read_result(raw)
    assert (result.message, result.code, result.retryable) == (
        "No such source",
        "resource_missing",
        False,
    )
    assert customer_update("card_1") == {"default_source": "card_1"}


# --- settle.lua: newest request wins after a batch job ----------------------------------------

ROW_AT = 1_000.0
SINCE = 2_000.0  # the batch job's start, on Redis's clock


def settle(server: fakeredis.FakeRedis, key: str) -> tuple[str, tuple[float, str, str] | None]:
    script = server.register_script(read_lua("producers.migrate", "settle.lua"))
    [answer] = script(keys=ordering_keys(key), args=[SINCE, 3600, repr(ROW_AT), "m1:2", "card_row"])
    return settle_action(answer)


def record(server: fakeredis.FakeRedis, key: str, **fields: object) -> None:
    server.hset(ordering_keys(key)[1], mapping={k: str(v) for k, v in fields.items()})


@pytest.mark.parametrize(
    ("newest", "locked", "expected"),
    [
        (None, False, "recorded"),  # nothing live: the row is now the newest
        (
            {"requested_at": ROW_AT - 1, "job_id": "live", "applied_at": SINCE - 5},
            False,
            "recorded",
        ),
        ({"requested_at": ROW_AT - 1, "job_id": "live", "applied_at": SINCE + 5}, False, "resend"),
        ({"requested_at": ROW_AT + 1, "job_id": "live", "source": "card_live"}, False, "newer"),
        ({"requested_at": ROW_AT, "job_id": "m1:2"}, False, "recorded"),  # the row itself
        (None, True, "busy"),
    ],
)
def test_settle_decides_by_request_time_and_by_who_wrote_during_the_batch(
    newest: dict[str, object] | None, locked: bool, expected: str
) -> None:
    server = fakeredis.FakeRedis()
    key = customer_key("cus_A", None)
    if newest:
        record(server, key, **newest)
    if locked:
        server.set(ordering_keys(key)[0], "token")
    action, newer = settle(server, key)
    assert action == expected
    if expected == "newer":
        assert newer == (ROW_AT + 1, "live", "card_live")
    if expected == "recorded":
        stored = server.hgetall(ordering_keys(key)[1])
        assert stored[b"job_id"] == b"m1:2" and stored[b"source"] == b"card_row"


def test_the_worker_records_the_card_and_redis_time_it_applied() -> None:
    server = fakeredis.FakeRedis()
    guard = CustomerGuard(server, lock_seconds=5, max_job_age_seconds=60)
    key = customer_key("cus_A", "acct_1X")
    token, _ = guard.enter(key)
    assert token is not None
    guard.leave(key, token, AppliedRequest(ROW_AT, "live-1", "card_9"))
    stored = server.hgetall(ordering_keys(key)[1])
    assert stored[b"source"] == b"card_9"
    assert float(stored[b"applied_at"]) > SINCE  # Redis's clock: now, in epoch seconds


def test_one_settle_call_answers_each_customer_in_order() -> None:
    server = fakeredis.FakeRedis()
    keys = [customer_key(c, None) for c in ("cus_A", "cus_B", "cus_C")]
    server.set(ordering_keys(keys[1])[0], "token")
    record(server, keys[2], requested_at=ROW_AT + 1, job_id="live", source="card_live")
    script = server.register_script(read_lua("producers.migrate", "settle.lua"))
    flat = [k for key in keys for k in ordering_keys(key)]
    args: list[object] = [SINCE, 3600]
    for line in (2, 3, 4):
        args += [repr(ROW_AT), f"m1:{line}", "card_row"]
    answers = script(keys=flat, args=args)
    assert [settle_action(a)[0] for a in answers] == ["recorded", "busy", "newer"]

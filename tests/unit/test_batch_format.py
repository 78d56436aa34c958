"""The guessed shapes of Stripe's Batch Jobs API: input lines and result lines."""

from __future__ import annotations

import json

import pytest

from producers.migrate.batch_format import LineResult, download_url, input_line, read_result


def test_an_input_line_is_one_json_object_with_the_sdk_fields() -> None:
    raw = input_line("7", "cus_A", "card_1B", "acct_1C", "2026-09-30.preview")
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    assert json.loads(raw) == {
        "id": "7",
        "path_params": {"customer": "cus_A"},
        "params": {"default_source": "card_1B"},
        "stripe_version": "2026-09-30.preview",
        "context": "acct_1C",
    }


@pytest.mark.parametrize(
    ("raw", "expected", "ok", "retryable"),
    [
        (
            '{"id": "3", "status": 200, "response": {"id": "cus_A"}}',
            LineResult("3", 200, None),
            True,
            False,
        ),
        (
            '{"id": "4", "status": 400, "response": {"error": {"message": "No such source"}}}',
            LineResult("4", 400, "No such source"),
            False,
            False,
        ),
        (
            '{"id": "5", "status": 429, "response": {}}',
            LineResult("5", 429, "Stripe gave no message"),
            False,
            True,
        ),
        ('{"id": "6", "status": 500}', LineResult("6", 500, "Stripe gave no message"), False, True),
        ("{not json", LineResult(None, None, "unreadable result line from Stripe"), False, False),
        (
            '{"id": "7", "status": "200"}',
            LineResult(None, None, "unreadable result line from Stripe"),
            False,
            False,
        ),
        ('["a list"]', LineResult(None, None, "unreadable result line from Stripe"), False, False),
    ],
    ids=[
        "ok",
        "permanent",
        "rate-limited",
        "server-error",
        "not-json",
        "status-not-int",
        "not-object",
    ],
)
def test_result_lines_are_read_or_reported_unreadable(
    raw: str, expected: LineResult, ok: bool, retryable: bool
) -> None:
    result = read_result(raw)
    assert result == expected
    assert (result.ok, result.retryable) == (ok, retryable)


@pytest.mark.parametrize(
    "shape",
    [{"url": "https://files.example/out"}, "https://files.example/out"],
    ids=["object", "string"],
)
def test_the_download_url_is_read_from_either_shape(shape: object) -> None:
    assert download_url({"output_file": {"download_url": shape}}) == "https://files.example/out"

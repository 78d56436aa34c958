"""The dry run's decision: would a set_default_card job succeed, from what Stripe has now."""

from __future__ import annotations

from typing import Any

import pytest

from cards.jobs import validate_job
from worker.dry_run import verdict

CUSTOMER: dict[str, Any] = {
    "id": "cus_A",
    "default_source": "card_1",
    "invoice_settings": {"default_payment_method": "pm_9"},
    "sources": {"object": "list", "data": [{"id": "card_1"}, {"id": "card_2"}, {"id": "src_3"}]},
}


@pytest.mark.parametrize(
    ("source", "payment_method", "ok", "already"),
    [
        ("card_2", None, True, False),
        ("src_3", None, True, False),
        ("card_1", None, True, True),
        ("card_4", None, False, False),
        ("pm_5", {"id": "pm_5", "customer": "cus_A"}, True, False),
        ("pm_5", {"id": "pm_5", "customer": "cus_B"}, False, False),
        ("pm_5", None, False, False),
        ("pm_9", None, True, True),
    ],
)
def test_verdict(
    source: str, payment_method: dict[str, Any] | None, ok: bool, already: bool
) -> None:
    job = validate_job({"userId": "cus_A", "default_source": source})
    answer = verdict(job, CUSTOMER, payment_method)
    assert answer["status"] is ok
    if ok:
        assert answer["data"] == {
            "userId": "cus_A",
            "default_source": source,
            "already_default": already,
        }
    else:
        assert answer["data"]["kind"] == "not_attached"
        assert answer["message"].endswith("first")

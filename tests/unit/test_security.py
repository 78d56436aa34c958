"""Serialization the worker accepts, and data minimisation."""

from __future__ import annotations

from typing import Any

import pytest
from celery.exceptions import ImproperlyConfigured

from cards.redaction import minimal_customer
from cards.settings import Settings
from worker.app import app
from worker.security import assert_safe_serialization, unsafe_serialization


def test_the_shipped_configuration_is_json_only() -> None:
    assert unsafe_serialization(app.conf) == []
    assert app.conf.accept_content == ["json"]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"accept_content": ["json", "pickle"]}, "accept_content allows pickle"),
        (
            {"accept_content": ["application/x-python-serialize"]},
            "accept_content allows application/x-python-serialize",
        ),
        ({"result_accept_content": ["yaml"]}, "result_accept_content allows yaml"),
        ({"task_serializer": "pickle"}, "task_serializer is 'pickle'"),
        ({"result_serializer": "msgpack"}, "result_serializer is 'msgpack'"),
    ],
)
def test_anything_but_json_refuses_to_start(change: dict[str, Any], problem: str) -> None:
    conf = {
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_serializer": "json",
        "result_serializer": "json",
        **change,
    }
    assert unsafe_serialization(conf) == [problem]
    with pytest.raises(ImproperlyConfigured, match="refusing to start: only JSON"):
        assert_safe_serialization(conf)


def test_signed_json_is_accepted() -> None:
    conf = {"accept_content": ["auth"], "task_serializer": "auth", "result_serializer": "json"}
    assert unsafe_serialization(conf) == []


def test_signing_needs_all_three_files(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="message signing needs"):
        Settings(signing_key_file=tmp_path / "key.pem")


CUSTOMER = {
    "id": "cus_1",
    "object": "customer",
    "email": "ana@example.com",
    "name": "Ana",
    "phone": "+15550100",
    "address": {"line1": "1 Main St"},
    "default_source": "card_1",
    "invoice_settings": {"default_payment_method": None},
    "sources": {
        "object": "list",
        "data": [
            {
                "id": "card_1",
                "object": "card",
                "brand": "Visa",
                "last4": "4242",
                "exp_month": 12,
                "exp_year": 2030,
                "name": "Ana",
                "address_line1": "1 Main St",
            },
        ],
        "has_more": False,
    },
}


def test_minimal_data_keeps_defaults_and_cards_but_no_personal_data() -> None:
    minimal = minimal_customer(CUSTOMER)
    assert minimal == {
        "id": "cus_1",
        "object": "customer",
        "default_source": "card_1",
        "invoice_settings": {"default_payment_method": None},
        "sources": {
            "object": "list",
            "data": [
                {
                    "id": "card_1",
                    "object": "card",
                    "brand": "Visa",
                    "last4": "4242",
                    "exp_month": 12,
                    "exp_year": 2030,
                }
            ],
        },
    }
    text = str(minimal)
    for personal in ("ana@example.com", "Ana", "+15550100", "1 Main St"):
        assert personal not in text

"""Serialization the worker accepts, and data minimisation."""

from __future__ import annotations

from typing import Any

import pytest
from celery.exceptions import ImproperlyConfigured

from cards.redaction import minimal_customer, redact_customer, redact_source
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


def test_settings_repr_masks_every_secret_and_url_password() -> None:
    settings = Settings(
        celery_broker_url="redis://:broker-password-123@127.0.0.1:6379/0",
        celery_result_backend="rediss://cards:backend-password-456@redis.internal:6380/1",
        state_redis_url="redis://:state-password-789@127.0.0.1:6379/2",
        stripe_api_key="sk_test_stripe-secret-000",
        gateway_api_keys="gateway-key-secret-0123456789",
        flower_basic_auth="ops:flower-secret-password",
    )
    for text in (repr(settings), str(settings)):
        for secret in (
            "broker-password-123",
            "backend-password-456",
            "state-password-789",
            "sk_test_stripe-secret-000",
            "gateway-key-secret-0123456789",
            "flower-secret-password",
        ):
            assert secret not in text
        assert "redis://:**********@127.0.0.1:6379/0" in text
        assert "rediss://cards:**********@redis.internal:6380/1" in text
    assert settings.celery_broker_url == "redis://:broker-password-123@127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("auth", "problem"),
    [
        ("admin:x", "at least 12 characters"),
        ("admin:change-me", "at least 12 characters"),
        ("admin:aaaaaaaaaaaaaaaa", "must not repeat the user name or a few characters"),
        ("operator:operator-2024!", "must not repeat the user name"),
        ("ops:correct-horse-battery,viewer:short", "entry 2: the password must be at least 12"),
        ("ops:correct-horse-battery", None),
    ],
)
def test_flower_passwords_have_a_minimum_strength(auth: str, problem: str | None) -> None:
    found = Settings(flower_basic_auth=auth).flower_password_problem
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
        assert auth.split(":")[-1] not in found


CARD_SOURCE = {
    "id": "src_1",
    "object": "source",
    "client_secret": "src_1_secret_abc",
    "card": {"brand": "Visa", "last4": "4242", "fingerprint": "fp_1", "name": None},
    "owner": {"email": "ana@example.com", "name": "Ana", "address": None},
    "type": "card",
}


@pytest.mark.parametrize("minimal", [False, True])
def test_a_sources_client_secret_is_never_kept(minimal: bool) -> None:
    customer = {**CUSTOMER, "sources": {"object": "list", "data": [CARD_SOURCE]}}
    for kept in (
        redact_customer(customer, minimal),
        redact_source(CARD_SOURCE, minimal),
    ):
        assert "client_secret" not in str(kept)
        assert "src_1" in str(kept)
    if minimal:
        assert redact_source(CARD_SOURCE, minimal=True) == {
            "id": "src_1",
            "object": "source",
            "type": "card",
        }

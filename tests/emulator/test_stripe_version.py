"""The pinned Stripe API version: its default is the spec copy's, and every call sends it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from cards.jobs import validate_job
from cards.settings import STRIPE_API_VERSION, Settings
from stripe_emulator.admin_client import EmulatorAdmin
from stripe_emulator.process import EmulatorProcess
from tests.stripe_openapi import StripeSpec
from worker.stripe_api import StripeApi

from .conftest import API_KEY


def test_the_default_is_the_version_of_stripes_description(stripe_spec: StripeSpec) -> None:
    assert Settings().stripe_api_version == STRIPE_API_VERSION == stripe_spec.version


def test_the_environment_moves_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_API_VERSION", "2024-06-20")
    assert Settings().stripe_api_version == "2024-06-20"
    monkeypatch.setenv("STRIPE_API_VERSION", "2025-03-31.basil")
    assert Settings().stripe_api_version == "2025-03-31.basil"


@pytest.mark.parametrize("bad", ["", "latest", "2020-8-27", "2020-08-27; drop"])
def test_a_malformed_version_fails_at_start_up(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("STRIPE_API_VERSION", bad)
    with pytest.raises(ValidationError, match="STRIPE_API_VERSION"):
        Settings()


@pytest.mark.parametrize("version", [STRIPE_API_VERSION, "2024-06-20"])
def test_every_call_sends_the_setting(
    emulator: EmulatorProcess, admin: EmulatorAdmin, seeded: dict[str, Any], version: str
) -> None:
    settings = Settings(
        stripe_api_key=SecretStr(API_KEY), stripe_api_base=emulator.url, stripe_api_version=version
    )
    gateway = StripeApi.from_settings(settings)
    job = validate_job({"userId": seeded["id"], "default_source": seeded["cards"][1]})
    admin.configure(capture_requests=True)
    gateway.retrieve_customer(job)
    gateway.set_default(job, f"version-{uuid.uuid4()}")
    gateway.list_cards(seeded["id"])
    sent = [
        {k.lower(): v for k, v in x["headers"].items()}.get("stripe-version")
        for x in admin.captured()
    ]
    assert sent == [version] * 3

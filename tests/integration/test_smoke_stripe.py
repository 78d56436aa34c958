"""``make smoke-stripe``, run as printed in the README: skip, refusal, and the whole
run against the emulator standing in for Stripe test mode (its requests checked
against Stripe's OpenAPI description)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from cards.settings import STRIPE_API_VERSION
from harness.processes import REPO_ROOT
from stripe_emulator.admin_client import EmulatorAdminError
from stripe_emulator.process import EmulatorProcess
from tests.integration.conftest import API_KEY
from tests.stripe_openapi import StripeSpec

SECRET = "0123456789abcdefSECRET"
SMOKE_TIMEOUT = 240


def make_smoke(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STRIPE_", "CELERY_", "CARDS_")) and k != "MAKEFLAGS"
    }
    return subprocess.run(
        ["make", "--no-print-directory", "smoke-stripe"],
        cwd=REPO_ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT,
    )


def test_without_a_key_it_says_it_skipped_in_one_line() -> None:
    # Set empty (not unset) so that a developer's .env cannot supply a key; loopback base.
    done = make_smoke(STRIPE_API_KEY="", STRIPE_API_BASE="http://127.0.0.1:9")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        "smoke-stripe: skipped: no Stripe key set (STRIPE_API_KEY=sk_test_…)"
    ]


@pytest.mark.parametrize("prefix", ["sk_live_", "rk_live_"])
def test_a_live_key_is_refused(prefix: str) -> None:
    done = make_smoke(STRIPE_API_KEY=prefix + SECRET, STRIPE_API_BASE="http://127.0.0.1:9")
    assert done.returncode == 2
    assert "refused: STRIPE_API_KEY is a live key" in done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_the_whole_run_against_the_emulator(
    emulator: EmulatorProcess, stripe_spec: StripeSpec
) -> None:
    emulator.admin.configure(capture_requests=True)
    try:
        done = make_smoke(STRIPE_API_KEY=API_KEY, STRIPE_API_BASE=emulator.url)
        captured = emulator.admin.captured()
    finally:
        emulator.admin.configure(capture_requests=False)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.strip().endswith("smoke-stripe: passed")
    [customer] = re.findall(r"customer (cus_\w+) with cards", out)
    cards = re.findall(r"default_source=(card_\w+) through producer, worker and Stripe: ok", out)
    assert len(set(cards)) == 2
    assert f"customer {customer} deleted" in out
    with pytest.raises(EmulatorAdminError):
        emulator.admin.get_customer(customer)
    ours = [x for x in captured if customer in x["path"] + x["body"]]
    assert {(x["method"], x["path"].replace(customer, "{c}")) for x in ours} >= {
        ("POST", "/v1/customers/{c}/sources"),
        ("POST", "/v1/customers/{c}"),
        ("DELETE", "/v1/customers/{c}"),
    }
    assert {x["path"]: stripe_spec.exchange_problems(x, STRIPE_API_VERSION) for x in ours} == {
        x["path"]: [] for x in ours
    }

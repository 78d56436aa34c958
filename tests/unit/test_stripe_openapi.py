"""The spec check itself: it refuses what Stripe's description refuses, and says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import stripe_openapi
from tests.stripe_openapi import StripeSpec

CUSTOMER = "/v1/customers/cus_1"
SOURCES = "/v1/customers/cus_1/sources"
ACCEPTED = [
    ("POST", CUSTOMER, "", "default_source=card_1&expand[0]=sources"),
    ("POST", CUSTOMER, "", "invoice_settings[default_payment_method]=pm_1&expand[0]=sources"),
    ("POST", CUSTOMER, "", "metadata[a]=&metadata[b]=c"),
    ("POST", SOURCES, "", "source=tok_visa&metadata[cards_job_id]=j1"),
    ("GET", CUSTOMER, "expand[0]=sources", ""),
    ("GET", SOURCES, "limit=100&starting_after=card_1", ""),
    ("GET", "/v1/payment_methods/pm_1", "", ""),
]
REFUSED = [
    ("unknown top-level", "POST", CUSTOMER, "", "bogus=1", "bogus"),
    ("unknown nested", "POST", CUSTOMER, "", "invoice_settings[bogus]=1", "bogus"),
    ("too long", "POST", CUSTOMER, "", "default_source=card_" + "a" * 496, "maxLength=500"),
    ("expand not a list", "POST", CUSTOMER, "", "expand=sources", "type=array"),
    ("integer", "GET", SOURCES, "limit=ten", "", "type=integer"),
    ("unknown query", "GET", CUSTOMER, "limit=3", "", "limit"),
    ("body on a GET", "GET", CUSTOMER, "", "a=1", "'a' was unexpected"),
    ("no such operation", "PUT", CUSTOMER, "", "", "no operation"),
]


@pytest.mark.parametrize(("method", "path", "query", "body"), ACCEPTED)
def test_accepts_what_stripe_accepts(
    stripe_spec: StripeSpec, method: str, path: str, query: str, body: str
) -> None:
    assert stripe_spec.request_problems(method, path, query=query, body=body) == []


@pytest.mark.parametrize(
    ("method", "path", "query", "body", "why"),
    [r[1:] for r in REFUSED],
    ids=[r[0] for r in REFUSED],
)
def test_refuses_what_stripe_refuses(
    stripe_spec: StripeSpec, method: str, path: str, query: str, body: str, why: str
) -> None:
    problems = stripe_spec.request_problems(method, path, query=query, body=body)
    assert problems
    assert why in " ".join(problems)


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"Stripe-Version": "2020-08-27", "Stripe-Account": "acct_1"}, None),
        ({"Stripe-Version": "2024-01-01"}, "Stripe-Version"),
        ({"Stripe-Version": "2020-08-27", "Stripe-Account": "cus_1"}, "Stripe-Account"),
        ({"Stripe-Version": "2020-08-27", "Idempotency-Key": "k" * 256}, "Idempotency-Key"),
    ],
)
def test_headers(stripe_spec: StripeSpec, headers: dict[str, str], why: str | None) -> None:
    problems = stripe_spec.request_problems(
        "POST", CUSTOMER, body="default_source=card_1", headers=headers, stripe_version="2020-08-27"
    )
    assert (why is None and problems == []) or (why is not None and why in " ".join(problems))


def test_spec_is_found_beside_the_repo_or_by_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(stripe_openapi.SPEC_ENV, raising=False)
    assert stripe_openapi.spec_path() == (
        stripe_openapi.REPO.parent / "shared/reference/stripe-openapi/spec3.json"
    )
    missing = tmp_path / "nowhere.json"
    monkeypatch.setenv(stripe_openapi.SPEC_ENV, str(missing))
    assert stripe_openapi.spec_path() == missing
    assert str(missing) in stripe_openapi.missing_reason()

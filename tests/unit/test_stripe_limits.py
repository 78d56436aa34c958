"""Our id rules against Stripe's published limits, as a table.

Each row names a job field, the Stripe parameter it becomes and where. The longest
id our rules accept must pass the spec's check of that request, and one character
more must be refused by our rules (so nothing over Stripe's cap reaches Stripe).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cards.companion_jobs import validate_assign_job
from cards.jobs import MAX_JOB_ID_LENGTH, MAX_STRIPE_ID_LENGTH, InvalidJob, validate_job
from cards.kinds import KINDS
from tests.stripe_openapi import MAX_IDEMPOTENCY_KEY, StripeSpec
from worker.idempotency import idempotency_key

#: The largest key generation a job could reach (one per attempt, at most 100 attempts).
MAX_GENERATION = 100


def _longest(prefix: str) -> str:
    return prefix + "a" * (MAX_STRIPE_ID_LENGTH - len(prefix))


# (field, prefix, validator, method, path template, where, the Stripe parameter)
ROWS: list[tuple[str, str, Callable[[dict[str, Any]], Any], str, str, str, str]] = [
    ("userId", "cus_", validate_job, "POST", "/v1/customers/{}", "path", "customer"),
    ("default_source", "card_", validate_job, "POST", "/v1/customers/cus_1", "body",
     "default_source"),
    ("default_source", "src_", validate_job, "POST", "/v1/customers/cus_1", "body",
     "default_source"),
    ("default_source", "pm_", validate_job, "POST", "/v1/customers/cus_1", "body",
     "invoice_settings[default_payment_method]"),
    ("default_source", "pm_", validate_job, "GET", "/v1/payment_methods/{}", "path",
     "payment_method"),
    ("source", "tok_", validate_assign_job, "POST", "/v1/customers/cus_1/sources", "body",
     "source"),
    ("source", "src_", validate_assign_job, "POST", "/v1/customers/cus_1/sources", "body",
     "source"),
]  # fmt: skip
BASE = {
    validate_job: {"userId": "cus_1", "default_source": "card_1"},
    validate_assign_job: {"userId": "cus_1", "source": "tok_visa"},
}


def _spec_limit(spec: StripeSpec, method: str, path: str, where: str, name: str) -> int:
    _, op, _ = spec.operation(method, path.format("x_1"))
    if where == "path":
        schema = spec.query_schema(op, "path")["properties"][name]
    else:
        schema = spec.resolve(spec.body_schema(method, path))
        for part in name.replace("]", "").split("["):
            schema = spec.resolve(schema["properties"][part])
    return int(schema["maxLength"])


@pytest.mark.parametrize(
    ("field", "prefix", "validate", "method", "path", "where", "name"),
    ROWS,
    ids=[f"{r[0]}={r[1]}… as {r[6]}" for r in ROWS],
)
def test_our_cap_is_within_stripes(
    stripe_spec: StripeSpec,
    field: str,
    prefix: str,
    validate: Callable[[dict[str, Any]], Any],
    method: str,
    path: str,
    where: str,
    name: str,
) -> None:
    assert _spec_limit(stripe_spec, method, path, where, name) >= MAX_STRIPE_ID_LENGTH
    longest = _longest(prefix)
    validate({**BASE[validate], field: longest})
    with pytest.raises(InvalidJob, match=f"at most {MAX_STRIPE_ID_LENGTH} characters"):
        validate({**BASE[validate], field: longest + "a"})
    body = f"{name}={longest}" if where == "body" else ""
    concrete = path.format(longest) if where == "path" else path
    assert stripe_spec.request_problems(method, concrete, body=body) == []


def test_stripe_caps_default_source_at_500(stripe_spec: StripeSpec) -> None:
    limit = _spec_limit(stripe_spec, "POST", "/v1/customers/cus_1", "body", "default_source")
    assert limit == 500
    too_long = "default_source=card_" + "a" * 496
    assert stripe_spec.request_problems("POST", "/v1/customers/cus_1", body=too_long)


@pytest.mark.parametrize("prefix", sorted({kind.key_prefix for kind in KINDS if kind.key_prefix}))
def test_the_longest_idempotency_key_fits_stripes_255(prefix: str) -> None:
    key = idempotency_key("j" * MAX_JOB_ID_LENGTH, MAX_GENERATION, prefix=prefix)
    assert len(key) <= MAX_IDEMPOTENCY_KEY

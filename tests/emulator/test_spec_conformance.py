"""The emulator against Stripe's OpenAPI description: what it accepts, answers and refuses.

- Its parameter tables accept nothing the spec does not list, with the spec's
  ``maxLength`` for every string, and only expansions the spec allows.
- Every answer (customer with ``sources`` expanded, card, source, PaymentMethod,
  list, deleted customer, error) validates against the operation's response schema.
- It refuses what Stripe refuses, before executing, with Stripe's error shape,
  ``code`` and ``param``; and the spec's own request check agrees on each refusal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from stripe_emulator.endpoints import CUSTOMER_EXPANDS, ROUTES, Route
from stripe_emulator.params import STRING_MAX_LENGTH, Schema
from stripe_emulator.process import EmulatorProcess
from tests.stripe_openapi import StripeSpec

from .conftest import API_KEY

#: Emulator parameters the spec does not describe, and why they stay.
NOT_IN_SPEC = {
    # ``source`` is a string with x-stripeBypassValidation; Stripe's docs take a card hash.
    ("POST /v1/customers", "source"),
    ("POST /v1/customers/{id}/sources", "source"),
}


def _operation_params(spec: StripeSpec, route: Route) -> Mapping[str, Any]:
    path = re.sub(r"\{[^}]+\}", "x_1", route.template)
    _, op, _ = spec.operation(route.method, path)
    if "requestBody" in op and route.method != "GET":
        return spec.body_schema(route.method, path)
    return spec.query_schema(op, "query")


def _branches(spec: StripeSpec, schema: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    schema = spec.resolve(schema)
    return [spec.resolve(b) for b in schema.get("anyOf", [schema])]


def _divergences(
    spec: StripeSpec, ours: Schema, theirs: Mapping[str, Any], route: str, prefix: str = ""
) -> list[str]:
    props: dict[str, Any] = {}
    for branch in _branches(spec, theirs):
        props.update(branch.get("properties", {}))
    found = []
    for name, param in ours.items():
        full = f"{prefix}[{name}]" if prefix else name
        if (route, full) in NOT_IN_SPEC:
            continue
        if name not in props:
            found.append(f"{full}: accepted here, unknown to Stripe")
            continue
        branches = _branches(spec, props[name])
        if param.kind == "object" and param.fields is not None:
            objects = {"anyOf": [b for b in branches if "properties" in b]}
            found += _divergences(spec, param.fields, objects, route, full)
        if param.kind in ("string", "string_or_object"):
            limits = {b.get("maxLength") for b in branches if b.get("type") == "string"}
            limits.discard(None)
            wanted = max(limits) if limits else STRING_MAX_LENGTH
            if param.max_length != wanted:
                found.append(f"{full}: at most {param.max_length}, Stripe {wanted}")
    return found


@pytest.mark.parametrize("route", ROUTES, ids=[r.key for r in ROUTES])
def test_parameters_and_limits_are_stripes(stripe_spec: StripeSpec, route: Route) -> None:
    theirs = _operation_params(stripe_spec, route)
    assert _divergences(stripe_spec, route.schema, theirs, route.key) == []


def test_expansions_are_ones_stripe_allows(stripe_spec: StripeSpec) -> None:
    for path in CUSTOMER_EXPANDS:
        schema = stripe_spec.component("customer")
        *parents, leaf = path.split(".")
        for parent in parents:
            assert parent in schema["x-expandableFields"], path
            schema = _branches(stripe_spec, schema["properties"][parent])[0]
        assert leaf in schema["x-expandableFields"], path


# ----------------------------------------------------------------------- answers


@pytest.fixture
def http(emulator: EmulatorProcess, admin: Any) -> httpx.Client:
    return httpx.Client(
        base_url=emulator.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=5
    )


def _call(
    http: httpx.Client, method: str, path: str, form: Mapping[str, str] | None = None
) -> tuple[int, Any, str]:
    body = httpx.QueryParams(form or {})
    if method == "GET":
        answer = http.get(path, params=body)
        return answer.status_code, answer.json(), ""
    encoded = str(body)
    answer = http.request(
        method,
        path,
        content=encoded,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    return answer.status_code, answer.json(), encoded


def test_every_answer_fits_its_schema(
    http: httpx.Client, seeded: dict[str, Any], stripe_spec: StripeSpec
) -> None:
    cus = f"/v1/customers/{seeded['id']}"
    pm = seeded["payment_methods"][0]
    expand_all = {f"expand[{i}]": e for i, e in enumerate(CUSTOMER_EXPANDS)}
    calls: list[tuple[str, str, dict[str, str], str]] = [
        ("GET", cus, {"expand[0]": "sources"}, "customer"),
        ("POST", cus, {"invoice_settings[default_payment_method]": pm}, "customer"),
        ("GET", cus, expand_all, "customer"),
        ("POST", cus, {"default_source": seeded["cards"][1], "expand[0]": "sources"}, "customer"),
        ("POST", cus, {"default_source": seeded["sources"][0], **expand_all}, "customer"),
        ("POST", f"{cus}/sources", {"source": "tok_visa", "metadata[k]": "v"}, "card"),
        ("GET", f"{cus}/sources/{seeded['sources'][0]}", {}, "source"),
        ("GET", f"/v1/sources/{seeded['sources'][0]}", {}, "source"),
        ("GET", f"/v1/payment_methods/{pm}", {}, "payment_method"),
        ("POST", "/v1/tokens", {"card": "tok_mastercard"}, "token"),
        ("GET", f"{cus}/sources", {"limit": "100"}, ""),
        ("GET", f"{cus}/payment_methods", {"type": "card"}, ""),
        ("DELETE", cus, {}, "deleted_customer"),
        ("GET", cus, {}, "deleted_customer"),
    ]
    problems = {}
    for method, path, form, component in calls:
        status, body, _ = _call(http, method, path, form)
        assert status == 200, (method, path, body)
        found = stripe_spec.response_problems(body, operation=(method, path))
        if component:
            found += stripe_spec.response_problems(body, component=component)
        if found:
            problems[f"{method} {path} {form}"] = found
    assert problems == {}


def test_a_missing_or_mistyped_field_fails_the_check(
    http: httpx.Client, seeded: dict[str, Any], stripe_spec: StripeSpec
) -> None:
    _, customer, _ = _call(http, "GET", f"/v1/customers/{seeded['id']}", {"expand[0]": "sources"})
    assert stripe_spec.response_problems(customer, component="customer") == []
    missing = {k: v for k, v in customer.items() if k != "livemode"}
    mistyped = {**customer, "created": "yesterday"}
    card = customer["sources"]["data"][-1]
    assert stripe_spec.response_problems(missing, component="customer")
    assert stripe_spec.response_problems(mistyped, component="customer")
    assert stripe_spec.response_problems({**card, "exp_year": "2030"}, component="card")
    assert (
        stripe_spec.response_problems({**customer, "extra": {"new": 1}}, component="customer") == []
    )


# ---------------------------------------------------------------------- refusals

LONG = "a" * 5001
#: (case, method, path under the customer, form, status, code, param); "{card}" and "{pm}"
#: are the seeded customer's card and PaymentMethod, "{other}" another customer's card;
#: a path "!cus_x" replaces the customer's id.
REFUSALS: list[tuple[str, str, str, dict[str, str], int, str | None, str]] = [
    ("unknown parameter", "POST", "", {"defualt_source": "{card}"}, 400, "parameter_unknown",
     "defualt_source"),
    ("unknown nested parameter", "POST", "", {"invoice_settings[bogus]": "x"}, 400,
     "parameter_unknown", "invoice_settings[bogus]"),
    ("unknown query parameter", "GET", "", {"limit": "3"}, 400, "parameter_unknown", "limit"),
    ("default_source over 500 characters", "POST", "", {"default_source": "card_" + "a" * 496},
     400, None, "default_source"),
    ("PaymentMethod id over 5000 characters", "POST", "",
     {"invoice_settings[default_payment_method]": "pm_" + LONG}, 400, None,
     "invoice_settings[default_payment_method]"),
    ("expand not a list", "POST", "", {"expand": "sources"}, 400, None, "expand"),
    ("expand of a field that does not expand", "GET", "", {"expand[0]": "email"}, 400, None,
     "expand[0]"),
    ("limit not an integer", "GET", "/sources", {"limit": "ten"}, 400,
     "parameter_invalid_integer", "limit"),
    ("no such customer", "POST", "!cus_missing", {"default_source": "{card}"}, 404,
     "resource_missing", "id"),
    ("card not attached", "POST", "", {"default_source": "{other}"}, 400, "resource_missing",
     "default_source"),
    ("PaymentMethod not attached", "POST", "",
     {"invoice_settings[default_payment_method]": "pm_missing"}, 400, "resource_missing",
     "invoice_settings[default_payment_method]"),
    ("no such token", "POST", "/sources", {"source": "tok_missing"}, 404, "resource_missing",
     "source"),
]  # fmt: skip
#: Refused by the parameters alone: the spec's request check must refuse them too.
PARAMETER_REFUSALS = frozenset(
    {
        "unknown parameter",
        "unknown nested parameter",
        "unknown query parameter",
        "default_source over 500 characters",
        "PaymentMethod id over 5000 characters",
        "expand not a list",
        "limit not an integer",
    }
)


@pytest.mark.parametrize(
    ("method", "tail", "form", "status", "code", "param", "case"),
    [(m, t, f, s, c, p, case) for case, m, t, f, s, c, p in REFUSALS],
    ids=[r[0] for r in REFUSALS],
)
def test_refusals_have_stripes_shape_code_and_param(
    http: httpx.Client,
    admin: Any,
    seeded: dict[str, Any],
    stripe_spec: StripeSpec,
    method: str,
    tail: str,
    form: dict[str, str],
    status: int,
    code: str | None,
    param: str,
    case: str,
) -> None:
    [other] = admin.seed(1)
    names = {
        "{card}": seeded["cards"][0],
        "{pm}": seeded["payment_methods"][0],
        "{other}": other["cards"][0],
    }
    form = {k: names.get(v, v) for k, v in form.items()}
    path = (
        f"/v1/customers/{tail[1:]}"
        if tail.startswith("!")
        else f"/v1/customers/{seeded['id']}{tail}"
    )
    before = admin.get_customer(seeded["id"])
    got, body, encoded = _call(http, method, path, form)
    assert got == status, body
    assert stripe_spec.response_problems(body, component="error") == []
    error = body["error"]
    assert (error["type"], error.get("code"), error.get("param")) == (
        "invalid_request_error",
        code,
        param,
    )
    assert admin.get_customer(seeded["id"]) == before
    query = str(httpx.QueryParams(form)) if method == "GET" else ""
    spec_refuses = stripe_spec.request_problems(method, path, query=query, body=encoded)
    assert bool(spec_refuses) == (case in PARAMETER_REFUSALS)


def test_captured_exchanges_are_the_wire_without_the_key(
    http: httpx.Client, admin: Any, seeded: dict[str, Any]
) -> None:
    path = f"/v1/customers/{seeded['id']}"
    _call(http, "GET", path, {"expand[0]": "sources"})
    assert admin.captured() == []  # off by default
    admin.configure(capture_requests=True)
    _, _, encoded = _call(http, "POST", path, {"default_source": seeded["cards"][1]})
    [exchange] = admin.captured()
    assert (exchange["method"], exchange["path"], exchange["body"]) == ("POST", path, encoded)
    assert exchange["status"] == 200
    assert '"default_source":"' + seeded["cards"][1] in exchange["response"]
    assert not any(name.lower() == "authorization" for name in exchange["headers"])
    admin.reset()
    assert admin.captured() == []

"""Resources, expansion, validation errors, auth and account scoping, via the official SDK."""

from __future__ import annotations

import re
from typing import Any, cast

import httpx
import pytest
import stripe

from stripe_emulator.admin_client import EmulatorAdmin
from stripe_emulator.process import EmulatorProcess, run_emulator

from .conftest import API_KEY, make_client

CUSTOMER_ID = re.compile(r"^cus_[A-Za-z0-9]{14}$")


def test_customer_shape_and_sources_only_when_expanded(client: stripe.StripeClient) -> None:
    cus: Any = client.v1.customers.create(
        {"email": "ada@example.com", "name": "Ada", "phone": "+15550100", "metadata": {"k": "v"}}
    )
    assert CUSTOMER_ID.match(cus.id)
    assert cus.object == "customer"
    assert cus.livemode is False
    assert cus.default_source is None
    assert cus.metadata.to_dict() == {"k": "v"}
    assert cus.invoice_settings.to_dict() == {
        "custom_fields": None,
        "default_payment_method": None,
        "footer": None,
        "rendering_options": None,
    }
    assert "sources" not in cus

    card = client.v1.customers.payment_sources.create(cus.id, {"source": "tok_visa"})
    assert card.object == "card"
    assert card.id.startswith("card_")
    assert (card.brand, card.last4, card.customer) == ("Visa", "4242", cus.id)

    plain = client.v1.customers.retrieve(cus.id)
    assert "sources" not in plain
    assert plain.default_source == card.id  # first attached source becomes the default

    expanded: Any = client.v1.customers.retrieve(cus.id, {"expand": ["sources"]})
    assert expanded.sources.object == "list"
    assert expanded.sources.total_count == 1
    assert expanded.sources.has_more is False
    assert expanded.sources.url == f"/v1/customers/{cus.id}/sources"
    assert [s.id for s in expanded.sources.data] == [card.id]


def test_set_default_source_card_and_src(
    client: stripe.StripeClient, seeded: dict[str, Any]
) -> None:
    cus_id = seeded["id"]
    second = seeded["cards"][1]
    updated: Any = client.v1.customers.update(
        cus_id, {"default_source": second, "expand": ["sources"]}
    )
    assert updated.default_source == second
    assert {s.id for s in updated.sources.data} == {*seeded["cards"], *seeded["sources"]}

    src = seeded["sources"][0]
    assert client.v1.customers.update(cus_id, {"default_source": src}).default_source == src


def test_attach_token_source_and_card_details(client: stripe.StripeClient) -> None:
    cus = client.v1.customers.create({"email": "grace@example.com"})
    card_params: Any = {"number": "5555555555554444", "exp_month": 12, "exp_year": 2031}
    tok: Any = client.v1.tokens.create({"card": card_params})
    assert tok.id.startswith("tok_")
    card: Any = client.v1.customers.payment_sources.create(cus.id, {"source": tok.id})
    assert card.id == tok.card.id
    assert card.brand == "MasterCard"

    with pytest.raises(stripe.InvalidRequestError) as reused:
        client.v1.customers.payment_sources.create(cus.id, {"source": tok.id})
    assert reused.value.code == "token_already_used"

    src: Any = client.v1.sources.create({"type": "card", "token": "tok_amex"})
    assert src.object == "source"
    assert src.card.brand == "American Express"
    attached: Any = client.v1.customers.payment_sources.create(cus.id, {"source": src.id})
    assert attached.id == src.id
    assert attached.customer == cus.id

    raw_card: Any = {
        "object": "card",
        "number": "4242424242424242",
        "exp_month": 12,
        "exp_year": 2030,
    }
    raw: Any = client.v1.customers.payment_sources.create(cus.id, {"source": raw_card})
    assert raw.last4 == "4242"

    cards = client.v1.customers.payment_sources.list(cus.id, {"object": "card"})
    assert {c.id for c in cards.data} == {card.id, raw.id}
    everything = client.v1.customers.payment_sources.list(cus.id)
    assert len(everything.data) == 3


def test_default_payment_method_via_invoice_settings(
    client: stripe.StripeClient, seeded: dict[str, Any]
) -> None:
    cus_id = seeded["id"]
    pm = client.v1.payment_methods.create({"type": "card", "card": {"token": "tok_visa"}})
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.customers.update(cus_id, {"invoice_settings": {"default_payment_method": pm.id}})
    err = refused.value
    assert err.http_status == 400
    assert err.code == "resource_missing"
    assert err.param == "invoice_settings[default_payment_method]"
    assert f"payment method with the ID {pm.id}" in str(err.user_message)

    client.v1.payment_methods.attach(pm.id, {"customer": cus_id})
    updated: Any = client.v1.customers.update(
        cus_id, {"invoice_settings": {"default_payment_method": pm.id}}
    )
    assert updated.invoice_settings.default_payment_method == pm.id
    listed = client.v1.customers.payment_methods.list(cus_id)
    assert {p.id for p in listed.data} == {pm.id, *seeded["payment_methods"]}


def test_missing_customer_is_404_resource_missing(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.update("cus_doesnotexist00", {"default_source": "card_x"})
    err = exc.value
    assert err.http_status == 404
    assert err.code == "resource_missing"
    assert err.param == "id"
    assert err.user_message == "No such customer: 'cus_doesnotexist00'"
    assert err.request_id is not None and err.request_id.startswith("req_")


def test_unattached_default_source_is_refused(
    client: stripe.StripeClient, seeded: dict[str, Any], admin: EmulatorAdmin
) -> None:
    other = admin.seed(1)[0]
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.update(seeded["id"], {"default_source": other["cards"][0]})
    err = exc.value
    assert err.http_status == 400
    assert err.code == "resource_missing"
    assert err.param == "default_source"
    assert err.user_message == (
        f"Customer {seeded['id']} does not have a linked source with ID {other['cards'][0]}."
    )
    assert admin.get_customer(seeded["id"])["default_source"] == seeded["default_source"]


def test_parameter_errors(client: stripe.StripeClient, seeded: dict[str, Any]) -> None:
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.customers.update(seeded["id"], cast(Any, {"bogus": "1"}))
    assert (unknown.value.code, unknown.value.param) == ("parameter_unknown", "bogus")

    with pytest.raises(stripe.InvalidRequestError) as nested:
        client.v1.customers.update(seeded["id"], cast(Any, {"invoice_settings": {"nope": "x"}}))
    assert nested.value.param == "invoice_settings[nope]"

    with pytest.raises(stripe.InvalidRequestError) as expand:
        client.v1.customers.retrieve(seeded["id"], {"expand": ["subscriptions"]})
    assert "cannot be expanded" in str(expand.value.user_message)

    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.payment_methods.attach("pm_x", cast(Any, {}))
    assert (missing.value.code, missing.value.param) == ("parameter_missing", "customer")


def test_empty_string_unsets_or_is_refused(
    emulator: EmulatorProcess, seeded: dict[str, Any]
) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    url = f"{emulator.url}/v1/customers/{seeded['id']}"
    unset = httpx.post(url, data={"email": ""}, headers=headers)
    assert unset.status_code == 200
    assert unset.json()["email"] is None
    refused = httpx.post(url, data={"expand[0]": ""}, headers=headers)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "parameter_invalid_empty"


def test_every_response_has_request_id(emulator: EmulatorProcess) -> None:
    ok = httpx.get(f"{emulator.url}/_emulator/health")
    denied = httpx.get(f"{emulator.url}/v1/customers/cus_x")
    unknown = httpx.get(
        f"{emulator.url}/v1/charges", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    for response in (ok, denied, unknown):
        assert response.headers["Request-Id"].startswith("req_")
    assert unknown.status_code == 404


def test_auth_401_masks_the_key(client_factory: Any) -> None:
    bad_key = "sk_live_SECRETSECRET9876"
    with pytest.raises(stripe.AuthenticationError) as exc:
        client_factory(api_key=bad_key).v1.customers.create({})
    err = exc.value
    assert err.http_status == 401
    assert err.user_message == "Invalid API Key provided: sk_live_****9876"
    assert "SECRETSECRET" not in str(err.http_body)
    body: Any = err.json_body
    assert body["error"]["type"] == "invalid_request_error"
    assert "code" not in body["error"]


def test_api_key_flag_accepts_only_that_key() -> None:
    with run_emulator(api_key="sk_test_only_this_one_42") as emu:
        good = make_client(emu.url, api_key="sk_test_only_this_one_42")
        assert good.v1.customers.create({}).id.startswith("cus_")
        with pytest.raises(stripe.AuthenticationError) as exc:
            make_client(emu.url, api_key="sk_test_another_key_77").v1.customers.create({})
        assert "another" not in str(exc.value.user_message)
        assert emu.admin.config()["api_key_required"] is True
        assert "only_this_one" not in httpx.get(f"{emu.url}/_emulator/config").text


def test_stripe_account_scoping(client: stripe.StripeClient, admin: EmulatorAdmin) -> None:
    [connected] = admin.seed(1, account="acct_1ConnectedAcct")
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.retrieve(connected["id"])
    assert exc.value.http_status == 404

    got: Any = client.v1.customers.retrieve(
        connected["id"], {"expand": ["sources"]}, {"stripe_account": "acct_1ConnectedAcct"}
    )
    assert got.email == connected["email"]
    assert got.sources.total_count == 3  # 2 cards + 1 source; the pm is not a source
    created = client.v1.customers.create({}, {"stripe_account": "acct_other"})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.retrieve(created.id, {}, {"stripe_account": "acct_1ConnectedAcct"})
    assert (
        admin.get_customer(connected["id"], account="acct_1ConnectedAcct")["id"] == connected["id"]
    )


def test_seed_shape(admin: EmulatorAdmin, client: stripe.StripeClient) -> None:
    customers = admin.seed(10_000, cards_per_customer=2)
    assert len(customers) == 10_000
    assert len({c["id"] for c in customers}) == 10_000
    first = customers[0]
    assert set(first) >= {"id", "email", "cards", "sources", "payment_methods", "default_source"}
    assert len(first["cards"]) == 2
    assert first["default_source"] == first["cards"][0]
    assert first["email"].endswith("@example.com")
    cus: Any = client.v1.customers.retrieve(customers[-1]["id"], {"expand": ["sources"]})
    assert cus.name and cus.phone
    assert {s.id for s in cus.sources.data} == {*customers[-1]["cards"], *customers[-1]["sources"]}
    assert admin.health()["customers"] >= 10_000


def test_admin_reads_are_not_api_calls(
    client: stripe.StripeClient, admin: EmulatorAdmin, seeded: dict[str, Any]
) -> None:
    admin.get_customer(seeded["id"])
    assert admin.ledger(events=False)["requests_by_customer"].get(seeded["id"], 0) == 0
    client.v1.customers.retrieve(seeded["id"])
    assert admin.ledger(events=False)["requests_by_customer"][seeded["id"]] == 1

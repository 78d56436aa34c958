"""The emulated /v1 routes: parameter schemas and handlers.

Each :class:`Route` pairs a schema (checked before execution, see
:mod:`stripe_emulator.params`) with a synchronous handler that reads or changes one
account's :class:`~stripe_emulator.store.AccountData` and returns ``(status, json)`` or
raises :class:`~stripe_emulator.errors.StripeError`. Errors raised by a handler happen
"while executing" and are saved under the request's Idempotency-Key, like Stripe's.
Parameter tables list only what Stripe's published OpenAPI description lists. Error
shapes that are guesses, and the routes beyond the brief: ``docs/emulator.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from . import params as P
from .card_numbers import TEST_TOKENS, parse_card
from .errors import invalid_request, no_such
from .limits import CUSTOMER_UPDATE
from .params import Schema
from .resources import JSON, Customer, deleted_object, list_object
from .store import AccountData, apply_metadata

DEFAULT_LIST_LIMIT = 10
MAX_LIST_LIMIT = 100

CUSTOMER_EXPANDS = ("sources", "default_source", "invoice_settings.default_payment_method")


@dataclass(frozen=True, slots=True)
class Call:
    data: AccountData
    ids: Mapping[str, str]
    params: dict[str, Any]


Handler = Callable[[Call], tuple[int, JSON]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    template: str
    handler: Handler
    schema: Schema
    customer_from: str | None = None
    """``"path"``: the ``{id}`` path segment names the customer; ``"param"``: the
    ``customer`` parameter does; ``None``: the route touches no particular customer."""
    limit: str | None = None
    """Extra per-endpoint rate limit bucket (see :mod:`stripe_emulator.limits`)."""

    @property
    def key(self) -> str:
        return f"{self.method} {self.template}"

    @property
    def write(self) -> bool:
        return self.method != "GET"


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=_HasId)


def _expand(call: Call) -> frozenset[str]:
    values = call.params.get("expand")
    return frozenset(values) if values else frozenset()


def _page(items: Sequence[T], params: Mapping[str, Any], url: str) -> tuple[list[T], bool, str]:
    limit = params.get("limit") or DEFAULT_LIST_LIMIT
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise invalid_request(
            f"Invalid limit: must be between 1 and {MAX_LIST_LIMIT}",
            code="parameter_invalid_integer",
            param="limit",
        )
    start = 0
    end = len(items)
    after = params.get("starting_after")
    before = params.get("ending_before")
    if after is not None:
        index = next((i for i, item in enumerate(items) if item.id == after), None)
        if index is None:
            raise no_such("object", after, param="starting_after")
        start = index + 1
    elif before is not None:
        index = next((i for i, item in enumerate(items) if item.id == before), None)
        if index is None:
            raise no_such("object", before, param="ending_before")
        end = index
        start = max(0, end - limit)
    page = list(items[start : min(end, start + limit)])
    has_more = start + limit < end if before is None else start > 0
    return page, has_more, url


def _list(
    items: Sequence[T], params: Mapping[str, Any], url: str, render: Callable[[T], JSON]
) -> JSON:
    page, has_more, url = _page(items, params, url)
    return list_object([render(item) for item in page], url, has_more=has_more)


# ---------------------------------------------------------------------- customers


def create_customer(call: Call) -> tuple[int, JSON]:
    p = call.params
    data = call.data
    source = p.get("source")
    pm_id = p.get("payment_method")
    invoice = p.get("invoice_settings") or {}
    default_pm = invoice.get("default_payment_method")
    if isinstance(source, str) and not source.startswith("src_"):
        data.token(source, param="source")
    elif isinstance(source, str):
        data.source(source, param="source")
    elif source is not None:
        parse_card(source["number"], source.get("exp_month"), source.get("exp_year"))
    pm = data.payment_method(pm_id, param="payment_method") if pm_id else None
    if pm is not None and pm.customer is not None:
        raise invalid_request(
            "The payment method you provided has already been attached to a customer.",
            param="payment_method",
        )
    if default_pm is not None and (pm is None or default_pm != pm.id):
        raise invalid_request(
            f"The customer does not have a payment method with the ID {default_pm}. The "
            "payment method must be attached to the customer.",
            code="resource_missing",
            param="invoice_settings[default_payment_method]",
        )
    cus = data.new_customer(
        email=p.get("email"),
        name=p.get("name"),
        phone=p.get("phone"),
        description=p.get("description"),
        metadata=p.get("metadata"),
    )
    cus.invoice_footer = invoice.get("footer")
    if source is not None:
        data.attach_source(cus, source)
    if pm is not None:
        data.attach_payment_method(pm, cus)
        cus.default_payment_method = default_pm
    return 200, cus.to_json(_expand(call))


def retrieve_customer(call: Call) -> tuple[int, JSON]:
    customer_id = call.ids["id"]
    if customer_id in call.data.deleted_customers:
        return 200, deleted_object(customer_id, "customer")
    return 200, call.data.customer(customer_id).to_json(_expand(call))


def update_customer(call: Call) -> tuple[int, JSON]:
    data = call.data
    p = call.params
    cus = data.customer(call.ids["id"])
    default_source = p.get("default_source")
    if default_source is not None:
        data.check_default_source(cus, default_source)
    invoice = p.get("invoice_settings")
    if invoice is not None:
        default_pm = invoice.get("default_payment_method")
        if default_pm is not None:
            data.check_default_payment_method(cus, default_pm)
    for name in ("email", "name", "phone", "description"):
        if name in p:
            setattr(cus, name, p[name])
    if "metadata" in p:
        apply_metadata(cus.metadata, p["metadata"])
    if "default_source" in p:
        cus.default_source = default_source
    if "invoice_settings" in p:
        if invoice is None:
            cus.default_payment_method = None
            cus.invoice_footer = None
        else:
            if "default_payment_method" in invoice:
                cus.default_payment_method = invoice["default_payment_method"]
            if "footer" in invoice:
                cus.invoice_footer = invoice["footer"]
    return 200, cus.to_json(_expand(call))


def delete_customer(call: Call) -> tuple[int, JSON]:
    customer_id = call.ids["id"]
    call.data.delete_customer(customer_id)
    return 200, deleted_object(customer_id, "customer")


def list_customers(call: Call) -> tuple[int, JSON]:
    customers: list[Customer] = list(reversed(call.data.customers.values()))
    email = call.params.get("email")
    if email is not None:
        customers = [c for c in customers if c.email == email]
    expand = frozenset(e.removeprefix("data.") for e in _expand(call))
    return 200, _list(customers, call.params, "/v1/customers", lambda c: c.to_json(expand))


# ------------------------------------------------------------------------ sources


def list_customer_sources(call: Call) -> tuple[int, JSON]:
    cus = call.data.customer(call.ids["id"])
    items = cus.sources_list(call.params.get("object"))
    return 200, _list(items, call.params, cus.sources_url(), lambda s: s.to_json())


def attach_customer_source(call: Call) -> tuple[int, JSON]:
    cus = call.data.customer(call.ids["id"])
    attached = call.data.attach_source(cus, call.params["source"])
    metadata = call.params.get("metadata")
    if "metadata" in call.params:
        apply_metadata(attached.metadata, metadata)
    return 200, attached.to_json()


def retrieve_customer_source(call: Call) -> tuple[int, JSON]:
    cus = call.data.customer(call.ids["id"])
    attached = cus.sources.get(call.ids["source"])
    if attached is None:
        raise no_such("source", call.ids["source"], param="id")
    return 200, attached.to_json()


def detach_customer_source(call: Call) -> tuple[int, JSON]:
    cus = call.data.customer(call.ids["id"])
    detached = call.data.detach_source(cus, call.ids["source"])
    if detached.object == "card":
        return 200, deleted_object(detached.id, "card")
    return 200, detached.to_json()


def create_source(call: Call) -> tuple[int, JSON]:
    p = call.params
    src = call.data.create_source(call.data.details_from(p["token"], param="token"))
    if "metadata" in p:
        apply_metadata(src.metadata, p["metadata"])
    return 200, src.to_json()


def retrieve_source(call: Call) -> tuple[int, JSON]:
    return 200, call.data.source(call.ids["id"]).to_json()


# ------------------------------------------------------------------------- tokens


def create_token(call: Call) -> tuple[int, JSON]:
    card = call.params["card"]
    if isinstance(card, str):
        if card not in TEST_TOKENS:
            raise invalid_request("Invalid card: must be a hash of card details", param="card")
        return 200, call.data.create_token(
            call.data.token(card, param="card").card.details
        ).to_json()
    details = call.data.details_from(card, param="card")
    return 200, call.data.create_token(details).to_json()


def retrieve_token(call: Call) -> tuple[int, JSON]:
    tok = call.data.tokens.get(call.ids["id"])
    if tok is None:
        raise no_such("token", call.ids["id"])
    return 200, tok.to_json()


# ---------------------------------------------------------------- payment methods


def create_payment_method(call: Call) -> tuple[int, JSON]:
    details = call.data.details_from(call.params["card"], param="card")
    pm = call.data.create_payment_method(details)
    if "metadata" in call.params:
        apply_metadata(pm.metadata, call.params["metadata"])
    return 200, pm.to_json()


def retrieve_payment_method(call: Call) -> tuple[int, JSON]:
    return 200, call.data.payment_method(call.ids["id"]).to_json()


def attach_payment_method(call: Call) -> tuple[int, JSON]:
    data = call.data
    cus = data.customer(call.params["customer"], param="customer")
    pm = data.payment_method(call.ids["id"])
    return 200, data.attach_payment_method(pm, cus).to_json()


def detach_payment_method(call: Call) -> tuple[int, JSON]:
    data = call.data
    return 200, data.detach_payment_method(data.payment_method(call.ids["id"])).to_json()


def list_customer_payment_methods(call: Call) -> tuple[int, JSON]:
    cus = call.data.customer(call.ids["id"])
    items = list(reversed(cus.payment_methods.values()))
    url = f"/v1/customers/{cus.id}/payment_methods"
    return 200, _list(items, call.params, url, lambda pm: pm.to_json())


def list_payment_methods(call: Call) -> tuple[int, JSON]:
    cus = call.data.customer(call.params["customer"], param="customer")
    items = list(reversed(cus.payment_methods.values()))
    return 200, _list(items, call.params, "/v1/payment_methods", lambda pm: pm.to_json())


# ------------------------------------------------------------------------ schemas

_ADDRESS_FIELDS = {
    name: P.string(unsettable=True)
    for name in (
        "address_city",
        "address_country",
        "address_line1",
        "address_line2",
        "address_state",
        "address_zip",
    )
}
_TOKEN_CARD_FIELDS: Schema = {
    "number": P.string(required=True),
    "exp_month": P.integer(required=True),
    "exp_year": P.integer(required=True),
    "cvc": P.string(),
    "name": P.string(unsettable=True),
    "currency": P.string(),
    **_ADDRESS_FIELDS,
}
#: ``source[object]=card&source[number]=…``: Stripe's spec marks ``source`` as a string
#: that bypasses its validation; its docs describe this hash.
_CARD_FIELDS: Schema = {**_TOKEN_CARD_FIELDS, "object": P.string(choices=frozenset({"card"}))}
_PM_CARD_FIELDS: Schema = {
    "token": P.string(),
    "number": P.string(),
    "exp_month": P.integer(),
    "exp_year": P.integer(),
    "cvc": P.string(),
}
_LIST: Schema = {
    "limit": P.integer(),
    "starting_after": P.string(),
    "ending_before": P.string(),
}
_CUSTOMER_FIELDS: Schema = {
    "email": P.string(unsettable=True, max_length=512),
    "name": P.string(unsettable=True, max_length=256),
    "phone": P.string(unsettable=True, max_length=20),
    "description": P.string(unsettable=True),
    "metadata": P.metadata(),
    "expand": P.expand(*CUSTOMER_EXPANDS),
}

CREATE_CUSTOMER: Schema = {
    **_CUSTOMER_FIELDS,
    "source": P.string_or_object(_CARD_FIELDS),
    "payment_method": P.string(),
    "invoice_settings": P.obj(
        {"default_payment_method": P.string(unsettable=True), "footer": P.string(unsettable=True)}
    ),
}
UPDATE_CUSTOMER: Schema = {
    **_CUSTOMER_FIELDS,
    "default_source": P.string(unsettable=True, max_length=500),
    "invoice_settings": P.obj(
        {"default_payment_method": P.string(unsettable=True), "footer": P.string(unsettable=True)},
        unsettable=True,
    ),
}


def _expand_only(*allowed: str) -> Schema:
    return {"expand": P.expand(*allowed)}


ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/customers", create_customer, CREATE_CUSTOMER),
    Route(
        "GET",
        "/v1/customers",
        list_customers,
        {
            **_LIST,
            "email": P.string(max_length=512),
            "expand": P.expand(*(f"data.{e}" for e in CUSTOMER_EXPANDS)),
        },
    ),
    Route(
        "GET",
        "/v1/customers/{id}",
        retrieve_customer,
        _expand_only(*CUSTOMER_EXPANDS),
        customer_from="path",
    ),
    Route(
        "POST",
        "/v1/customers/{id}",
        update_customer,
        UPDATE_CUSTOMER,
        customer_from="path",
        limit=CUSTOMER_UPDATE,
    ),
    Route("DELETE", "/v1/customers/{id}", delete_customer, {}, customer_from="path"),
    Route(
        "GET",
        "/v1/customers/{id}/sources",
        list_customer_sources,
        {
            **_LIST,
            "object": P.string(choices=frozenset({"card", "source", "bank_account"})),
            "expand": P.expand(),
        },
        customer_from="path",
    ),
    Route(
        "POST",
        "/v1/customers/{id}/sources",
        attach_customer_source,
        {
            "source": P.string_or_object(_CARD_FIELDS, required=True),
            "metadata": P.metadata(),
            "expand": P.expand(),
        },
        customer_from="path",
    ),
    Route(
        "GET",
        "/v1/customers/{id}/sources/{source}",
        retrieve_customer_source,
        _expand_only(),
        customer_from="path",
    ),
    Route(
        "DELETE",
        "/v1/customers/{id}/sources/{source}",
        detach_customer_source,
        _expand_only(),
        customer_from="path",
    ),
    Route(
        "GET",
        "/v1/customers/{id}/payment_methods",
        list_customer_payment_methods,
        {**_LIST, "type": P.string(choices=frozenset({"card"})), "expand": P.expand()},
        customer_from="path",
    ),
    Route(
        "POST",
        "/v1/tokens",
        create_token,
        {"card": P.string_or_object(_TOKEN_CARD_FIELDS, required=True), "expand": P.expand()},
    ),
    Route("GET", "/v1/tokens/{id}", retrieve_token, _expand_only()),
    Route(
        "POST",
        "/v1/sources",
        create_source,
        {
            "type": P.string(required=True, choices=frozenset({"card"})),
            "token": P.string(required=True),
            "usage": P.string(choices=frozenset({"reusable", "single_use"})),
            "owner": P.obj({"email": P.string(), "name": P.string(), "phone": P.string()}),
            "metadata": P.metadata(),
            "expand": P.expand(),
        },
    ),
    Route("GET", "/v1/sources/{id}", retrieve_source, _expand_only()),
    Route(
        "POST",
        "/v1/payment_methods",
        create_payment_method,
        {
            "type": P.string(required=True, choices=frozenset({"card"})),
            "card": P.obj(_PM_CARD_FIELDS, required=True),
            "billing_details": P.obj(
                {"email": P.string(), "name": P.string(), "phone": P.string()}
            ),
            "metadata": P.metadata(),
            "expand": P.expand(),
        },
    ),
    Route(
        "GET",
        "/v1/payment_methods",
        list_payment_methods,
        {
            **_LIST,
            "customer": P.string(required=True),
            "type": P.string(choices=frozenset({"card"})),
            "expand": P.expand(),
        },
        customer_from="param",
    ),
    Route("GET", "/v1/payment_methods/{id}", retrieve_payment_method, _expand_only()),
    Route(
        "POST",
        "/v1/payment_methods/{id}/attach",
        attach_payment_method,
        {"customer": P.string(required=True), "expand": P.expand()},
        customer_from="param",
    ),
    Route(
        "POST",
        "/v1/payment_methods/{id}/detach",
        detach_payment_method,
        _expand_only(),
    ),
)

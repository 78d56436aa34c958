"""The emulated Stripe objects and their JSON renderings.

Each class keeps only what the emulator reads or writes; ``to_json`` fills in the rest of
the fields Stripe returns with their neutral values (``null``, ``{}``, ``false``) so the
SDK's typed objects see the same shape as in production. Customers render as in
Stripe's current API versions (``sources`` only when expanded; see ``docs/emulator.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .card_numbers import CardDetails

JSON = dict[str, Any]

_CARD_ADDRESS_NULLS: JSON = {
    "address_city": None,
    "address_country": None,
    "address_line1": None,
    "address_line1_check": None,
    "address_line2": None,
    "address_state": None,
    "address_zip": None,
    "address_zip_check": None,
}


@dataclass(slots=True)
class Card:
    id: str
    details: CardDetails
    created: int
    customer: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    object = "card"

    def to_json(self) -> JSON:
        d = self.details
        return {
            "id": self.id,
            "object": "card",
            **_CARD_ADDRESS_NULLS,
            "brand": d.brand,
            "country": d.country,
            "customer": self.customer,
            "cvc_check": "pass",
            "dynamic_last4": None,
            "exp_month": d.exp_month,
            "exp_year": d.exp_year,
            "fingerprint": d.fingerprint,
            "funding": d.funding,
            "last4": d.last4,
            "metadata": dict(self.metadata),
            "name": None,
            "tokenization_method": None,
            "wallet": None,
        }


@dataclass(slots=True)
class Token:
    id: str
    card: Card
    created: int
    reusable: bool = False
    used: bool = False

    def to_json(self) -> JSON:
        return {
            "id": self.id,
            "object": "token",
            "card": self.card.to_json(),
            "client_ip": "127.0.0.1",
            "created": self.created,
            "livemode": False,
            "type": "card",
            "used": self.used,
        }


@dataclass(slots=True)
class Source:
    id: str
    details: CardDetails
    created: int
    client_secret: str
    customer: str | None = None
    status: str = "chargeable"
    metadata: dict[str, str] = field(default_factory=dict)

    object = "source"

    def to_json(self) -> JSON:
        d = self.details
        return {
            "id": self.id,
            "object": "source",
            "amount": None,
            "card": {
                "address_line1_check": None,
                "address_zip_check": None,
                "brand": d.brand,
                "country": d.country,
                "cvc_check": "pass",
                "dynamic_last4": None,
                "exp_month": d.exp_month,
                "exp_year": d.exp_year,
                "fingerprint": d.fingerprint,
                "funding": d.funding,
                "last4": d.last4,
                "name": None,
                "three_d_secure": "optional",
                "tokenization_method": None,
            },
            "client_secret": self.client_secret,
            "created": self.created,
            "currency": None,
            "customer": self.customer,
            "flow": "none",
            "livemode": False,
            "metadata": dict(self.metadata),
            "owner": {
                "address": None,
                "email": None,
                "name": None,
                "phone": None,
                "verified_address": None,
                "verified_email": None,
                "verified_name": None,
                "verified_phone": None,
            },
            "statement_descriptor": None,
            "status": self.status,
            "type": "card",
            "usage": "reusable",
        }


@dataclass(slots=True)
class PaymentMethod:
    id: str
    details: CardDetails
    created: int
    customer: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> JSON:
        d = self.details
        brand = d.pm_brand
        return {
            "id": self.id,
            "object": "payment_method",
            "allow_redisplay": "unspecified",
            "billing_details": {
                "address": {
                    "city": None,
                    "country": None,
                    "line1": None,
                    "line2": None,
                    "postal_code": None,
                    "state": None,
                },
                "email": None,
                "name": None,
                "phone": None,
            },
            "card": {
                "brand": brand,
                "checks": {
                    "address_line1_check": None,
                    "address_postal_code_check": None,
                    "cvc_check": "pass",
                },
                "country": d.country,
                "display_brand": brand,
                "exp_month": d.exp_month,
                "exp_year": d.exp_year,
                "fingerprint": d.fingerprint,
                "funding": d.funding,
                "generated_from": None,
                "last4": d.last4,
                "networks": {"available": [brand], "preferred": None},
                "regulated_status": "unregulated",
                "three_d_secure_usage": {"supported": True},
                "wallet": None,
            },
            "created": self.created,
            "customer": self.customer,
            "livemode": False,
            "metadata": dict(self.metadata),
            "type": "card",
        }


Attachable = Card | Source


@dataclass(slots=True)
class Customer:
    id: str
    created: int
    invoice_prefix: str
    email: str | None = None
    name: str | None = None
    phone: str | None = None
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    default_source: str | None = None
    default_payment_method: str | None = None
    invoice_footer: str | None = None
    sources: dict[str, Attachable] = field(default_factory=dict)
    """Attached cards and sources, oldest first (insertion order)."""
    payment_methods: dict[str, PaymentMethod] = field(default_factory=dict)

    def sources_url(self) -> str:
        return f"/v1/customers/{self.id}/sources"

    def sources_list(self, object_filter: str | None = None) -> list[Attachable]:
        items = [s for s in reversed(self.sources.values())]
        if object_filter is not None:
            items = [s for s in items if s.object == object_filter]
        return items

    def to_json(self, expand: frozenset[str] = frozenset()) -> JSON:
        default_source: Any = self.default_source
        if default_source is not None and "default_source" in expand:
            attached = self.sources.get(default_source)
            default_source = attached.to_json() if attached is not None else default_source
        default_pm: Any = self.default_payment_method
        if default_pm is not None and "invoice_settings.default_payment_method" in expand:
            pm = self.payment_methods.get(default_pm)
            default_pm = pm.to_json() if pm is not None else default_pm
        out: JSON = {
            "id": self.id,
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": self.created,
            "currency": None,
            "default_source": default_source,
            "delinquent": False,
            "description": self.description,
            "discount": None,
            "email": self.email,
            "invoice_prefix": self.invoice_prefix,
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": default_pm,
                "footer": self.invoice_footer,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": dict(self.metadata),
            "name": self.name,
            "next_invoice_sequence": 1,
            "phone": self.phone,
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }
        if "sources" in expand:
            data = [s.to_json() for s in self.sources_list()]
            out["sources"] = list_object(data, self.sources_url(), total_count=len(data))
        return out


def list_object(
    data: list[JSON], url: str, *, has_more: bool = False, total_count: int | None = None
) -> JSON:
    out: JSON = {"object": "list", "data": data, "has_more": has_more}
    if total_count is not None:
        out["total_count"] = total_count
    out["url"] = url
    return out


def deleted_object(object_id: str, object_name: str) -> JSON:
    return {"id": object_id, "object": object_name, "deleted": True}

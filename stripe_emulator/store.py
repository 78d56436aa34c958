"""In-memory state, one :class:`AccountData` per ``Stripe-Account`` (``None`` = platform).

All operations are synchronous and run on the event loop thread, so each one is atomic
with respect to other requests: validation of a whole update happens before any field
changes, and a refused update leaves the customer untouched. Behaviour follows
Stripe's documentation; the choices where it is not confirmed: ``docs/emulator.md``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import ids
from .card_numbers import (
    TEST_PAYMENT_METHODS,
    TEST_TOKENS,
    CardDetails,
    known_card,
    parse_card,
)
from .errors import StripeError, invalid_request, no_such
from .resources import Card, Customer, PaymentMethod, Source, Token

INVOICE_PREFIX_LENGTH = 8
SEED_CARD_NUMBERS = (
    "4242424242424242",
    "5555555555554444",
    "378282246310005",
    "4000056655665556",
    "6011111111111117",
)
SEED_FIRST_NAMES = (
    "Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret",
    "Dennis", "Radia", "Tim", "Shafi", "Leslie", "Sophie", "Guido", "Hedy", "Linus",
)  # fmt: skip
SEED_LAST_NAMES = (
    "Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
    "Hamilton", "Ritchie", "Perlman", "Berners-Lee", "Goldwasser", "Lamport", "Wilson",
    "van Rossum", "Lamarr", "Torvalds",
)  # fmt: skip


def _now() -> int:
    return int(time.time())


@dataclass(slots=True)
class AccountData:
    account: str | None
    customers: dict[str, Customer] = field(default_factory=dict)
    deleted_customers: set[str] = field(default_factory=set)
    tokens: dict[str, Token] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)
    payment_methods: dict[str, PaymentMethod] = field(default_factory=dict)
    seeded: int = 0

    # ----------------------------------------------------------------- customers

    def customer(self, customer_id: str, *, param: str = "id") -> Customer:
        cus = self.customers.get(customer_id)
        if cus is None:
            raise no_such("customer", customer_id, param=param)
        return cus

    def new_customer(
        self,
        *,
        email: str | None = None,
        name: str | None = None,
        phone: str | None = None,
        description: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Customer:
        customer_id = ids.customer_id()
        while customer_id in self.customers:
            customer_id = ids.customer_id()
        cus = Customer(
            id=customer_id,
            created=_now(),
            invoice_prefix=ids.random_upper(INVOICE_PREFIX_LENGTH),
            email=email,
            name=name,
            phone=phone,
            description=description,
        )
        if metadata:
            apply_metadata(cus.metadata, metadata)
        self.customers[customer_id] = cus
        return cus

    def delete_customer(self, customer_id: str) -> None:
        cus = self.customer(customer_id)
        for src in cus.sources.values():
            if isinstance(src, Source):
                src.customer = None
                src.status = "consumed"
        for pm in cus.payment_methods.values():
            pm.customer = None
        del self.customers[customer_id]
        self.deleted_customers.add(customer_id)

    def check_default_source(self, cus: Customer, source_id: str) -> None:
        if source_id not in cus.sources:
            raise invalid_request(
                f"Customer {cus.id} does not have a linked source with ID {source_id}.",
                code="resource_missing",
                param="default_source",
            )

    def check_default_payment_method(self, cus: Customer, pm_id: str) -> None:
        if pm_id not in cus.payment_methods:
            raise invalid_request(
                f"The customer does not have a payment method with the ID {pm_id}. The "
                "payment method must be attached to the customer.",
                code="resource_missing",
                param="invoice_settings[default_payment_method]",
            )

    # ------------------------------------------------------------------- tokens

    def token(self, token_id: str, *, param: str) -> Token:
        """A usable token: fresh for the test tokens, single-use for created ones."""
        number = TEST_TOKENS.get(token_id)
        if number is not None:
            return self._mint_token(known_card(number), reusable=True, store=False)
        tok = self.tokens.get(token_id)
        if tok is None:
            raise no_such("token", token_id, param=param)
        if tok.used:
            raise invalid_request(
                f"You cannot use a Stripe token more than once: {token_id}.",
                code="token_already_used",
                param=param,
            )
        return tok

    def consume(self, tok: Token) -> Card:
        """Mark ``tok`` used and return its card (the card keeps the token's card id)."""
        if not tok.reusable:
            tok.used = True
        return tok.card

    def create_token(self, details: CardDetails) -> Token:
        return self._mint_token(details, reusable=False, store=True)

    def _mint_token(self, details: CardDetails, *, reusable: bool, store: bool) -> Token:
        now = _now()
        card = Card(id=ids.new_id("card_"), details=details, created=now)
        tok = Token(id=ids.new_id("tok_"), card=card, created=now, reusable=reusable)
        if store:
            self.tokens[tok.id] = tok
        return tok

    def details_from(self, card: Mapping[str, Any] | str, *, param: str) -> CardDetails:
        """Card details from a token id or a raw ``card[...]`` hash (validated)."""
        if isinstance(card, str):
            return self.consume(self.token(card, param=param)).details
        token_id = card.get("token")
        if token_id is not None:
            return self.consume(self.token(token_id, param=f"{param}[token]")).details
        number = card.get("number")
        if number is None:
            raise invalid_request(
                f"Missing required param: {param}[number].",
                code="parameter_missing",
                param=f"{param}[number]",
            )
        return parse_card(number, card.get("exp_month"), card.get("exp_year"))

    # ------------------------------------------------------------------ sources

    def source(self, source_id: str, *, param: str = "id") -> Source:
        src = self.sources.get(source_id)
        if src is None:
            raise no_such("source", source_id, param=param)
        return src

    def create_source(self, details: CardDetails) -> Source:
        source_id = ids.new_id("src_")
        src = Source(
            id=source_id,
            details=details,
            created=_now(),
            client_secret=f"{source_id}_secret_{ids.new_id('', 24)}",
        )
        self.sources[source_id] = src
        return src

    def attach_source(self, cus: Customer, spec: str | Mapping[str, Any]) -> Card | Source:
        """``source=tok_...``, ``source=src_...`` or ``source[object]=card&source[number]...``."""
        attached: Card | Source
        if isinstance(spec, str) and spec.startswith("src_"):
            src = self.source(spec, param="source")
            if src.customer == cus.id:
                return src
            if src.customer is not None or src.status != "chargeable":
                raise invalid_request(
                    f"The source {spec} has already been attached to a customer or consumed.",
                    param="source",
                )
            src.customer = cus.id
            attached = src
        elif isinstance(spec, str):
            card = self.consume(self.token(spec, param="source"))
            card.customer = cus.id
            attached = card
        else:
            if spec.get("object", "card") != "card":
                raise invalid_request(
                    "Invalid source object: must be a dictionary or a non-empty string.",
                    param="source[object]",
                )
            details = parse_card(spec["number"], spec.get("exp_month"), spec.get("exp_year"))
            attached = Card(
                id=ids.new_id("card_"), details=details, created=_now(), customer=cus.id
            )
        cus.sources[attached.id] = attached
        if cus.default_source is None:
            cus.default_source = attached.id
        return attached

    def detach_source(self, cus: Customer, source_id: str) -> Card | Source:
        attached = cus.sources.pop(source_id, None)
        if attached is None:
            raise no_such("source", source_id, param="id")
        if cus.default_source == source_id:
            cus.default_source = None
        if isinstance(attached, Source):
            attached.customer = None
            attached.status = "consumed"
        return attached

    # ---------------------------------------------------------- payment methods

    def payment_method(self, pm_id: str, *, param: str = "id") -> PaymentMethod:
        pm = self.payment_methods.get(pm_id)
        if pm is None:
            number = TEST_PAYMENT_METHODS.get(pm_id)
            if number is not None:
                return self.create_payment_method(known_card(number))
            raise no_such("PaymentMethod", pm_id, param=param)
        return pm

    def create_payment_method(self, details: CardDetails) -> PaymentMethod:
        pm = PaymentMethod(id=ids.new_id("pm_"), details=details, created=_now())
        self.payment_methods[pm.id] = pm
        return pm

    def attach_payment_method(self, pm: PaymentMethod, cus: Customer) -> PaymentMethod:
        if pm.customer == cus.id:
            return pm
        if pm.customer is not None:
            raise invalid_request(
                "The payment method you provided has already been attached to a customer.",
                param="payment_method",
            )
        pm.customer = cus.id
        cus.payment_methods[pm.id] = pm
        return pm

    def detach_payment_method(self, pm: PaymentMethod) -> PaymentMethod:
        if pm.customer is None:
            raise invalid_request(
                f"The payment method {pm.id} is not attached to a customer.",
                param="payment_method",
            )
        cus = self.customers.get(pm.customer)
        if cus is not None:
            cus.payment_methods.pop(pm.id, None)
            if cus.default_payment_method == pm.id:
                cus.default_payment_method = None
        pm.customer = None
        return pm

    # --------------------------------------------------------------------- seed

    def seed(self, count: int, cards_per_customer: int) -> list[dict[str, Any]]:
        """Create ``count`` customers with cards, a source and a payment method each."""
        out: list[dict[str, Any]] = []
        now = _now()
        new_id = ids.new_id
        n_numbers = len(SEED_CARD_NUMBERS)
        details = [known_card(n) for n in SEED_CARD_NUMBERS]
        for _ in range(count):
            i = self.seeded
            self.seeded += 1
            first = SEED_FIRST_NAMES[i % len(SEED_FIRST_NAMES)]
            last = SEED_LAST_NAMES[(i // len(SEED_FIRST_NAMES)) % len(SEED_LAST_NAMES)]
            cus = self.new_customer(
                email=f"customer{i}@example.com",
                name=f"{first} {last}",
                phone=f"+1555{i % 10_000_000:07d}",
                description=f"Seeded customer {i}",
            )
            cards: list[str] = []
            for k in range(cards_per_customer):
                card = Card(
                    id=new_id("card_"),
                    details=details[(i + k) % n_numbers],
                    created=now,
                    customer=cus.id,
                )
                cus.sources[card.id] = card
                cards.append(card.id)
            src = self.create_source(details[(i + 1) % n_numbers])
            src.customer = cus.id
            cus.sources[src.id] = src
            pm = PaymentMethod(
                id=new_id("pm_"), details=details[i % n_numbers], created=now, customer=cus.id
            )
            self.payment_methods[pm.id] = pm
            cus.payment_methods[pm.id] = pm
            cus.default_source = cards[0] if cards else src.id
            out.append(
                {
                    "id": cus.id,
                    "account": self.account,
                    "email": cus.email,
                    "name": cus.name,
                    "phone": cus.phone,
                    "cards": cards,
                    "sources": [src.id],
                    "payment_methods": [pm.id],
                    "default_source": cus.default_source,
                }
            )
        return out


def apply_metadata(target: dict[str, str], patch: Mapping[str, str] | None) -> None:
    """Stripe's metadata semantics: ``""`` deletes a key; ``None`` (``metadata=``) clears."""
    if patch is None:
        target.clear()
        return
    for key, value in patch.items():
        if value == "":
            target.pop(key, None)
        else:
            target[key] = value


class Store:
    """All accounts' data. Accounts are created on first use."""

    def __init__(self) -> None:
        self._accounts: dict[str | None, AccountData] = {}

    def account(self, account: str | None) -> AccountData:
        data = self._accounts.get(account)
        if data is None:
            data = AccountData(account)
            self._accounts[account] = data
        return data

    def accounts(self) -> list[str | None]:
        return list(self._accounts)

    def counts(self) -> dict[str, int]:
        return {
            "accounts": len(self._accounts),
            "customers": sum(len(a.customers) for a in self._accounts.values()),
        }

    def clear(self) -> None:
        self._accounts.clear()


__all__ = ["AccountData", "Store", "StripeError", "apply_metadata"]

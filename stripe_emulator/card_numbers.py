"""Card numbers: brand detection, Luhn check, fingerprints and Stripe's test tokens.

Only what the emulator needs to build believable ``card`` sub-objects. The raw number
never leaves this module's :class:`CardDetails` (responses carry ``last4`` and a
fingerprint, like Stripe's). A fingerprint is stable per number; the test tokens
(``tok_visa``...) and test payment methods (``pm_card_visa``...) may be used any number
of times, each use minting a fresh card. Details: ``docs/emulator.md``.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from functools import lru_cache

from .errors import card_error

DEFAULT_COUNTRY = "US"
TEST_CARD_EXPIRY_YEARS = 3
"""Test tokens expire this many years from now (December)."""

TEST_TOKENS: dict[str, str] = {
    "tok_visa": "4242424242424242",
    "tok_visa_debit": "4000056655665556",
    "tok_mastercard": "5555555555554444",
    "tok_mastercard_debit": "5200828282828210",
    "tok_amex": "378282246310005",
    "tok_discover": "6011111111111117",
    "tok_diners": "3056930009020004",
    "tok_jcb": "3566002020360505",
    "tok_unionpay": "6200000000000005",
}
TEST_PAYMENT_METHODS: dict[str, str] = {
    "pm_card_" + name.removeprefix("tok_"): number for name, number in TEST_TOKENS.items()
}
DEBIT_NUMBERS = frozenset({"4000056655665556", "5200828282828210"})

PM_BRANDS: dict[str, str] = {
    "Visa": "visa",
    "MasterCard": "mastercard",
    "American Express": "amex",
    "Discover": "discover",
    "JCB": "jcb",
    "Diners Club": "diners",
    "UnionPay": "unionpay",
    "Unknown": "unknown",
}

_FINGERPRINT_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True, slots=True)
class CardDetails:
    number: str
    exp_month: int
    exp_year: int
    brand: str
    funding: str
    country: str
    fingerprint: str

    @property
    def last4(self) -> str:
        return self.number[-4:]

    @property
    def pm_brand(self) -> str:
        return PM_BRANDS.get(self.brand, "unknown")


def brand_of(number: str) -> str:
    if number.startswith("4"):
        return "Visa"
    two = int(number[:2]) if len(number) >= 2 else 0
    four = int(number[:4]) if len(number) >= 4 else 0
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return "MasterCard"
    if two in (34, 37):
        return "American Express"
    if number.startswith("6011") or two == 65:
        return "Discover"
    if two == 35:
        return "JCB"
    if two in (30, 36, 38):
        return "Diners Club"
    if two == 62:
        return "UnionPay"
    return "Unknown"


def luhn_ok(number: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = ord(char) - 48
        if index % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


@lru_cache(maxsize=4096)
def fingerprint(number: str) -> str:
    value = int.from_bytes(hashlib.sha256(number.encode()).digest()[:12], "big")
    chars = []
    for _ in range(16):
        value, rem = divmod(value, 62)
        chars.append(_FINGERPRINT_ALPHABET[rem])
    return "".join(chars)


@lru_cache(maxsize=4096)
def _details(number: str, exp_month: int, exp_year: int) -> CardDetails:
    return CardDetails(
        number=number,
        exp_month=exp_month,
        exp_year=exp_year,
        brand=brand_of(number),
        funding="debit" if number in DEBIT_NUMBERS else "credit",
        country=DEFAULT_COUNTRY,
        fingerprint=fingerprint(number),
    )


def known_card(number: str) -> CardDetails:
    """Details for a known-good test number, expiring in December a few years out."""
    year = datetime.date.today().year + TEST_CARD_EXPIRY_YEARS
    return _details(number, 12, year)


def parse_card(number: str, exp_month: int | None, exp_year: int | None) -> CardDetails:
    """Validate raw card fields like Stripe's tokenizer (402 ``card_error`` on failure)."""
    digits = number.replace(" ", "").replace("-", "")
    if not digits.isdigit() or not 12 <= len(digits) <= 19 or not luhn_ok(digits):
        raise card_error("Your card number is incorrect.", code="incorrect_number", param="number")
    if exp_month is None or not 1 <= exp_month <= 12:
        raise card_error(
            "Your card's expiration month is invalid.",
            code="invalid_expiry_month",
            param="exp_month",
        )
    if exp_year is not None and exp_year < 100:
        exp_year += 2000
    today = datetime.date.today()
    if exp_year is None or (exp_year, exp_month) < (today.year, today.month):
        raise card_error(
            "Your card's expiration year is invalid.",
            code="invalid_expiry_year",
            param="exp_year",
        )
    return _details(digits, exp_month, exp_year)

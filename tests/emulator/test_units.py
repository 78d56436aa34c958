"""In-process checks of the pure building blocks (no server)."""

from __future__ import annotations

import pytest

from stripe_emulator import forms
from stripe_emulator import params as P
from stripe_emulator.card_numbers import brand_of, luhn_ok, parse_card
from stripe_emulator.errors import StripeError, mask_key
from stripe_emulator.idempotency import IdempotencyCache, Outcome, fingerprint
from stripe_emulator.limits import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bracket_decoding() -> None:
    pairs = forms.parse_pairs(
        "invoice_settings[default_payment_method]=pm_1&expand[0]=sources&expand[1]=x"
        "&metadata[a]=1&email=a%40b.c&tags[]=p&tags[]=q"
    )
    assert forms.decode(pairs) == {
        "invoice_settings": {"default_payment_method": "pm_1"},
        "expand": {"0": "sources", "1": "x"},
        "metadata": {"a": "1"},
        "email": "a@b.c",
        "tags": {"0": "p", "1": "q"},
    }
    assert forms.split_key("a[b") == ["a[b"]
    with pytest.raises(StripeError) as exc:
        forms.decode([("a", "1"), ("a[b]", "2")])
    assert exc.value.param == "a"


def test_schema_validation() -> None:
    schema = {
        "email": P.string(unsettable=True),
        "count": P.integer(),
        "metadata": P.metadata(),
        "expand": P.expand("sources"),
        "nested": P.obj({"x": P.string()}),
    }
    data = forms.decode(
        [("email", ""), ("count", "3"), ("metadata[k]", ""), ("expand[0]", "sources")]
    )
    assert P.validate(schema, data) == {
        "email": None,
        "count": 3,
        "metadata": {"k": ""},
        "expand": ["sources"],
    }
    for bad, code, param in [
        ([("nested[y]", "1")], "parameter_unknown", "nested[y]"),
        ([("count", "three")], "parameter_invalid_integer", "count"),
        ([("nested[x]", "")], "parameter_invalid_empty", "nested[x]"),
    ]:
        with pytest.raises(StripeError) as exc:
            P.validate(schema, forms.decode(bad))
        assert (exc.value.code, exc.value.param) == (code, param)


def test_cards() -> None:
    assert luhn_ok("4242424242424242")
    assert not luhn_ok("4242424242424241")
    assert brand_of("378282246310005") == "American Express"
    assert brand_of("5555555555554444") == "MasterCard"
    with pytest.raises(StripeError) as exc:
        parse_card("4242424242424241", 12, 2030)
    assert (exc.value.status, exc.value.code) == (402, "incorrect_number")


def test_key_masking_never_reveals_short_secrets() -> None:
    assert mask_key("sk_test_abcdefgh1234") == "sk_test_****1234"
    assert mask_key("sk_test_x") == "sk_test_****"
    assert mask_key("garbage") == "****"


def test_idempotency_cache_lifecycle() -> None:
    clock = FakeClock()
    cache = IdempotencyCache(10.0, clock=clock)
    fp = fingerprint("POST", "/v1/customers/cus_1", [("b", "2"), ("a", "1")])
    same = fingerprint("POST", "/v1/customers/cus_1", [("a", "1"), ("b", "2")])
    other = fingerprint("POST", "/v1/customers/cus_1", [("a", "9")])
    outcome, entry = cache.begin(None, "k", fp, "req_1")
    assert outcome is Outcome.CLAIMED
    assert cache.begin(None, "k", fp, "req_2")[0] is Outcome.IN_FLIGHT
    cache.complete(entry, 200, b"{}")
    assert cache.begin(None, "k", same, "req_3")[0] is Outcome.REPLAY
    assert cache.begin(None, "k", other, "req_4")[0] is Outcome.MISMATCH
    assert cache.begin("acct_1", "k", other, "req_5")[0] is Outcome.CLAIMED
    clock.now += 11
    assert cache.begin(None, "k", other, "req_6")[0] is Outcome.CLAIMED


def test_abandoned_claim_can_be_reused() -> None:
    cache = IdempotencyCache(10.0, clock=FakeClock())
    fp = fingerprint("POST", "/p", [])
    _, entry = cache.begin(None, "k", fp, "req_1")
    cache.abandon(None, "k", entry)
    assert cache.begin(None, "k", fp, "req_2")[0] is Outcome.CLAIMED


def test_token_bucket_admits_a_paced_client_and_refuses_bursts() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    limiter.configure({"global": 10.0})
    assert sum(limiter.allow("global", None) for _ in range(15)) == 10
    clock.now += 5
    for _ in range(100):  # exactly at the limit, forever
        assert limiter.allow("global", None)
        clock.now += 0.1
    assert limiter.allow("customer_update", None)  # unlimited bucket

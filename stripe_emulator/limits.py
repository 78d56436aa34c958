"""Rate limiting and per-customer write-concurrency tracking.

Rate limits are token buckets, one per ``(limit name, Stripe-Account)``, holding one
second's worth of tokens (at least 1) and refilling continuously, so a client pacing
at exactly the limit is never refused; a refused request consumes no token. Limits:
``global`` (all /v1 requests of an account), then ``customer_update``.
:class:`WriteTracker` counts the write *attempts* executing per ``(account, customer)``,
refused ones included. Why buckets and not a window: ``docs/emulator.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

GLOBAL = "global"
CUSTOMER_UPDATE = "customer_update"


@dataclass(slots=True)
class TokenBucket:
    rate: float
    capacity: float
    tokens: float
    stamp: float

    def take(self, now: float) -> bool:
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens > self.capacity:
            tokens = self.capacity
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rates: dict[str, float] = {}
        self._buckets: dict[tuple[str, str | None], TokenBucket] = {}

    def configure(self, rates: dict[str, float]) -> None:
        """Set requests/second per limit name (0 = unlimited).

        Buckets start over (full) only when the rates actually change.
        """
        new_rates = {name: rate for name, rate in rates.items() if rate > 0}
        if new_rates != self._rates:
            self._rates = new_rates
            self._buckets.clear()

    def reset(self) -> None:
        """Refill every bucket (forget past traffic)."""
        self._buckets.clear()

    def limited(self, name: str) -> bool:
        return name in self._rates

    def allow(self, name: str, account: str | None) -> bool:
        rate = self._rates.get(name)
        if rate is None:
            return True
        now = self._clock()
        key = (name, account)
        bucket = self._buckets.get(key)
        if bucket is None:
            capacity = max(1.0, rate)
            bucket = TokenBucket(rate=rate, capacity=capacity, tokens=capacity, stamp=now)
            self._buckets[key] = bucket
        return bucket.take(now)


class WriteTracker:
    def __init__(self) -> None:
        self._in_flight: dict[tuple[str | None, str], int] = {}

    def enter(self, account: str | None, customer: str) -> int:
        """Register a write attempt; returns how many are now executing (itself included)."""
        key = (account, customer)
        count = self._in_flight.get(key, 0) + 1
        self._in_flight[key] = count
        return count

    def leave(self, account: str | None, customer: str) -> None:
        key = (account, customer)
        count = self._in_flight.get(key, 0) - 1
        if count > 0:
            self._in_flight[key] = count
        else:
            self._in_flight.pop(key, None)

    def in_flight(self) -> int:
        return sum(self._in_flight.values())

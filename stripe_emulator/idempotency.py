"""Stripe's idempotency layer for POST requests, keyed by ``(Stripe-Account, Idempotency-Key)``.

Modelled on Stripe's documentation ("Idempotent requests"):

* a result is saved once the endpoint *starts executing*, whatever its status, 500s
  included; requests refused earlier (authentication, rate limiting, parameter
  validation, a lock conflict) save nothing, so retrying them with the same key runs them;
* a repeat of a saved request with the same method, path and parameters gets the saved
  status and body back with ``Idempotent-Replayed: true`` (and ``Original-Request``
  naming the first request) without running again;
* the same key with a different method, path or parameters is refused with 400
  ``idempotency_error`` (parameters are compared as the multiset of form pairs, so the
  order in which they were encoded does not matter);
* the same key while the first request is still executing is refused with 409
  ``idempotency_key_in_use``, and nothing is saved for the refused request;
* keys are forgotten ``idempotency_ttl_seconds`` (default 24 h) after first use.

Bookkeeping is O(1) per request: entries sit in an insertion-ordered dict and expired ones
are dropped from its front as new keys arrive. An entry that expires while still in
flight is never purged from under its request (it is only dropped once completed).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

MAX_KEY_LENGTH = 255
PURGE_PER_CALL = 64
"""At most this many expired entries are dropped per new key (amortised O(1))."""

Fingerprint = tuple[str, str, tuple[tuple[str, str], ...]]
CacheKey = tuple[str | None, str]


def fingerprint(method: str, path: str, pairs: list[tuple[str, str]]) -> Fingerprint:
    return (method, path, tuple(sorted(pairs)))


@dataclass(slots=True)
class Entry:
    fingerprint: Fingerprint
    created: float
    request_id: str
    done: bool = False
    status: int = 0
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


class Outcome(Enum):
    CLAIMED = "claimed"
    REPLAY = "replay"
    MISMATCH = "mismatch"
    IN_FLIGHT = "in_flight"


class IdempotencyCache:
    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[CacheKey, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def begin(
        self, account: str | None, key: str, fp: Fingerprint, request_id: str
    ) -> tuple[Outcome, Entry]:
        """Look ``key`` up; claim it for this request if it is new (or expired)."""
        now = self._clock()
        cache_key = (account, key)
        entry = self._entries.get(cache_key)
        if entry is not None:
            if not entry.done:
                return Outcome.IN_FLIGHT, entry
            if now - entry.created < self.ttl:
                if entry.fingerprint != fp:
                    return Outcome.MISMATCH, entry
                return Outcome.REPLAY, entry
            del self._entries[cache_key]
        self._purge(now)
        entry = Entry(fingerprint=fp, created=now, request_id=request_id)
        self._entries[cache_key] = entry
        return Outcome.CLAIMED, entry

    def complete(
        self,
        entry: Entry,
        status: int,
        body: bytes,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Save the executed request's answer under its key."""
        entry.status = status
        entry.body = body
        entry.headers = headers
        entry.done = True

    def abandon(self, account: str | None, key: str, entry: Entry) -> None:
        """Forget a claim whose request was refused before executing."""
        cache_key = (account, key)
        if self._entries.get(cache_key) is entry:
            del self._entries[cache_key]

    def clear(self) -> None:
        self._entries.clear()

    def _purge(self, now: float) -> None:
        entries = self._entries
        for _ in range(PURGE_PER_CALL):
            if not entries:
                return
            cache_key, oldest = next(iter(entries.items()))
            if not oldest.done or now - oldest.created < self.ttl:
                return
            del entries[cache_key]

"""Stripe's idempotency layer for POST requests, keyed by ``(Stripe-Account, Idempotency-Key)``.

A result is saved once the endpoint *starts executing*, whatever its status; a repeat
with the same method, path and parameters gets it back (``Idempotent-Replayed: true``)
without running again; a different request under the same key gets 400
``idempotency_error``, and one while the first still executes 409
``idempotency_key_in_use``. Keys are forgotten ``idempotency_ttl_seconds`` after first
use; an entry still in flight is never purged. Bookkeeping is O(1) per request. The
rules in full: ``docs/emulator.md``.
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

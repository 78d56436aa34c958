"""What the emulator saw and did, for exactly-once and pacing assertions.

``GET /_emulator/ledger`` returns :meth:`Ledger.to_json`: request, response, write,
replay, lock-timeout and fault counters, and one event per /v1 write request (capped
at :data:`MAX_EVENTS`, oldest kept). "Applied" means the write executed and changed
state; replays, refusals and errors raised while executing are not applied. Every
update is a few dict increments. The JSON form, field by field: ``docs/emulator.md``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, TypedDict

MAX_EVENTS = 500_000
NO_RESPONSE = "none"


class Event(TypedDict):
    request_id: str
    t_start: float
    t_end: float
    method: str
    path: str
    account: str | None
    customer: str | None
    idempotency_key: str | None
    status: int | None
    applied: bool
    replayed: bool
    fault: str | None


def ledger_key(account: str | None, key: str) -> str:
    return key if account is None else f"{account}:{key}"


class Ledger:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests_total = 0
        self.requests_by_customer: Counter[str] = Counter()
        self.responses_by_status: Counter[str] = Counter()
        self.writes_applied_total = 0
        self.writes_applied_by_key: Counter[str] = Counter()
        self.writes_applied_without_key = 0
        self.writes_applied_by_customer: Counter[str] = Counter()
        self.replays_total = 0
        self.replays_by_key: Counter[str] = Counter()
        self.lock_timeouts = 0
        self.max_concurrent: dict[str, int] = {}
        self.faults_injected: Counter[str] = Counter()
        self.events: list[Event] = []
        self.events_dropped = 0

    def request(self, customer: str | None) -> None:
        self.requests_total += 1
        if customer is not None:
            self.requests_by_customer[customer] += 1

    def response(self, status: int | None) -> None:
        self.responses_by_status[NO_RESPONSE if status is None else str(status)] += 1

    def concurrency(self, customer: str, count: int) -> None:
        if count > self.max_concurrent.get(customer, 0):
            self.max_concurrent[customer] = count

    def fault(self, kind: str) -> None:
        self.faults_injected[kind] += 1

    def write(self, event: Event) -> None:
        account = event["account"]
        key = event["idempotency_key"]
        if event["applied"]:
            self.writes_applied_total += 1
            if key is None:
                self.writes_applied_without_key += 1
            else:
                self.writes_applied_by_key[ledger_key(account, key)] += 1
            customer = event["customer"]
            if customer is not None:
                self.writes_applied_by_customer[customer] += 1
        if event["replayed"]:
            self.replays_total += 1
            if key is not None:
                self.replays_by_key[ledger_key(account, key)] += 1
        events = self.events
        if len(events) >= MAX_EVENTS:
            del events[: MAX_EVENTS // 10]
            self.events_dropped += MAX_EVENTS // 10
        events.append(event)

    def to_json(self, *, events: bool = True, since: int = 0) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requests_total": self.requests_total,
            "requests_by_customer": dict(self.requests_by_customer),
            "responses_by_status": dict(self.responses_by_status),
            "writes_applied_total": self.writes_applied_total,
            "writes_applied_by_key": dict(self.writes_applied_by_key),
            "writes_applied_without_key": self.writes_applied_without_key,
            "writes_applied_by_customer": dict(self.writes_applied_by_customer),
            "replays_total": self.replays_total,
            "replays_by_key": dict(self.replays_by_key),
            "lock_timeouts": self.lock_timeouts,
            "max_concurrent_writes_by_customer": dict(self.max_concurrent),
            "faults_injected": dict(self.faults_injected),
            "events_total": self.events_dropped + len(self.events),
            "events_dropped": self.events_dropped,
        }
        if events:
            start = max(0, since - self.events_dropped)
            out["events"] = self.events[start:]
        return out

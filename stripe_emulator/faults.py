"""Injected faults: their kinds, random draws, and scripted queues.

*Front-door* faults (``rate_limit``, ``conflict_409``, ``connection_reset``,
``error_401``, ``error_403``, ``late_arrival``) hit before the idempotency layer;
*execution* faults (``error_500``, ``error_500_after_commit``, ``timeout_after_commit``)
only affect a request that executes. Scripted faults are queued per customer and
consumed in order; while a customer has some queued, no random fault is drawn for it,
so a script runs deterministically. What each kind applies, saves and shows, and how
draws and scripts are consumed: ``docs/emulator.md``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

FRONT_DOOR_KINDS = (
    "rate_limit",
    "conflict_409",
    "connection_reset",
    "error_401",
    "error_403",
    "late_arrival",
)
EXECUTION_KINDS = ("error_500", "error_500_after_commit", "timeout_after_commit")
FAULT_KINDS = EXECUTION_KINDS + FRONT_DOOR_KINDS
_FRONT_DOOR = frozenset(FRONT_DOOR_KINDS)


class FaultSpecError(ValueError):
    """A fault description that cannot be used."""


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    should_retry: bool | None = None
    """When set, the response carries ``Stripe-Should-Retry: true|false``."""

    @property
    def front_door(self) -> bool:
        return self.kind in _FRONT_DOOR

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "should_retry": self.should_retry}

    @classmethod
    def parse(cls, spec: Any) -> Fault:
        """``"error_500"`` or ``{"kind": "error_500", "should_retry": false}``."""
        kind: Any
        if isinstance(spec, str):
            kind, should_retry = spec, None
        elif isinstance(spec, Mapping):
            kind = spec.get("kind")
            should_retry = spec.get("should_retry")
            if should_retry is not None and not isinstance(should_retry, bool):
                raise FaultSpecError("should_retry must be true, false or null")
        else:
            raise FaultSpecError(f"a fault is a kind name or an object, not {spec!r}")
        if kind not in FAULT_KINDS:
            raise FaultSpecError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
        return cls(str(kind), should_retry)


@dataclass(slots=True)
class Script:
    customer: str
    method: str | None
    path: str | None
    faults: deque[Fault] = field(default_factory=deque)

    def matches(self, method: str, template: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        if self.method is None and method == "GET":
            return False
        return self.path is None or self.path in (template, path)

    def to_json(self) -> dict[str, Any]:
        return {
            "customer": self.customer,
            "method": self.method,
            "path": self.path,
            "faults": [f.to_json() for f in self.faults],
        }


class FaultScripts:
    """Queues of scripted faults, per customer id.

    Without ``method`` a script matches writes (anything but GET); ``path`` may be a
    route template (``/v1/customers/{id}``) or a concrete path.
    """

    def __init__(self) -> None:
        self._by_customer: dict[str, list[Script]] = {}

    def __bool__(self) -> bool:
        return bool(self._by_customer)

    def add(
        self,
        customer: str,
        faults: Iterable[Fault],
        *,
        method: str | None = None,
        path: str | None = None,
    ) -> Script:
        script = Script(customer, method.upper() if method else None, path, deque(faults))
        if script.faults:
            self._by_customer.setdefault(customer, []).append(script)
        return script

    def next_for(
        self, customer: str, method: str, template: str, path: str
    ) -> tuple[Script, Fault] | None:
        """The first queued fault that applies to this request, without consuming it."""
        scripts = self._by_customer.get(customer)
        if not scripts:
            return None
        for script in scripts:
            if script.matches(method, template, path):
                return script, script.faults[0]
        return None

    def consume(self, script: Script) -> None:
        script.faults.popleft()
        if not script.faults:
            scripts = self._by_customer.get(script.customer)
            if scripts is not None:
                if script in scripts:
                    scripts.remove(script)
                if not scripts:
                    del self._by_customer[script.customer]

    def pending(self) -> list[dict[str, Any]]:
        return [s.to_json() for scripts in self._by_customer.values() for s in scripts]

    def clear(self, customer: str | None = None) -> None:
        if customer is None:
            self._by_customer.clear()
        else:
            self._by_customer.pop(customer, None)


class FaultDice:
    """Seeded random choice among fault kinds with the configured probabilities."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._table: tuple[tuple[float, str], ...] = ()

    def reseed(self, seed: int | None) -> None:
        self._rng.seed(seed)

    def set_rates(self, rates: Mapping[str, float]) -> None:
        table: list[tuple[float, str]] = []
        total = 0.0
        for kind in FAULT_KINDS:
            rate = rates.get(kind, 0.0)
            if rate > 0:
                total += rate
                table.append((total, kind))
        self._table = tuple(table)

    @property
    def armed(self) -> bool:
        return bool(self._table)

    def draw(self) -> Fault | None:
        if not self._table:
            return None
        u = self._rng.random()
        for threshold, kind in self._table:
            if u < threshold:
                return Fault(kind)
        return None


def parse_faults(specs: Sequence[Any]) -> list[Fault]:
    return [Fault.parse(spec) for spec in specs]

"""Runtime knobs of the emulator, settable at start (CLI) and live (``/_emulator/config``).

``POST /_emulator/config`` merges the given keys into the current config (unknown keys
are refused); ``faults`` replaces the whole rate table, so ``{"faults": {}}`` turns
random faults off. The sum of the fault rates must not exceed 1. The JSON form, key
by key: ``docs/emulator.md``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .faults import FAULT_KINDS

DEFAULT_HANG_SECONDS = 30.0
DEFAULT_LATE_ARRIVAL_SECONDS = 1.0
DEFAULT_IDEMPOTENCY_TTL_SECONDS = 24 * 3600.0
DEFAULT_FAULT_PATHS = ("POST /v1/customers/{id}",)
JITTER_DISTRIBUTIONS = ("uniform", "exponential")
EXPONENTIAL_JITTER_CAP = 10.0
"""Exponential jitter is capped at this many means so one draw cannot stall a test."""

READ_ONLY_KEYS = frozenset({"api_key_required"})


class ConfigError(ValueError):
    """A knob value that cannot be used."""


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    jitter_distribution: str = "uniform"
    faults: Mapping[str, float] = field(default_factory=dict)
    fault_paths: tuple[str, ...] = DEFAULT_FAULT_PATHS
    rate_limit_global: float = 0.0
    rate_limit_customer_update: float = 0.0
    lock_timeout: bool = True
    hang_seconds: float = DEFAULT_HANG_SECONDS
    #: How long after its client left a ``late_arrival`` request reaches the pipeline.
    late_arrival_seconds: float = DEFAULT_LATE_ARRIVAL_SECONDS
    idempotency_ttl_seconds: float = DEFAULT_IDEMPOTENCY_TTL_SECONDS
    seed: int | None = None
    log_requests: bool = False
    capture_requests: bool = False
    #: Batch jobs: lines run per second, the upload URL's life, a fraction of the lines
    #: after which a job ends ``timeout`` (0: never), and how many of the next uploads are
    #: answered but dropped (counted from when it is set).
    batch_lines_per_second: float = 100.0
    batch_upload_ttl_seconds: float = 300.0
    batch_timeout_at_fraction: float = 0.0
    batch_lose_uploads: int = 0
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in (
            "latency_ms",
            "jitter_ms",
            "rate_limit_global",
            "rate_limit_customer_update",
            "hang_seconds",
            "late_arrival_seconds",
            "batch_upload_ttl_seconds",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0")
        if self.batch_lines_per_second <= 0:
            raise ConfigError("batch_lines_per_second must be > 0")
        if not 0.0 <= self.batch_timeout_at_fraction < 1.0:
            raise ConfigError("batch_timeout_at_fraction must be within [0, 1)")
        if self.idempotency_ttl_seconds <= 0:
            raise ConfigError("idempotency_ttl_seconds must be > 0")
        if self.jitter_distribution not in JITTER_DISTRIBUTIONS:
            raise ConfigError(f"jitter_distribution must be one of {JITTER_DISTRIBUTIONS}")
        total = 0.0
        for kind, rate in self.faults.items():
            if kind not in FAULT_KINDS:
                raise ConfigError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
            if not 0.0 <= rate <= 1.0:
                raise ConfigError(f"fault rate for {kind} must be within [0, 1]")
            total += rate
        if total > 1.0 + 1e-9:
            raise ConfigError(f"fault rates add up to {total:.3f} > 1")
        for route in self.fault_paths:
            method, _, path = route.partition(" ")
            if method not in ("GET", "POST", "DELETE") or not path.startswith("/v1/"):
                raise ConfigError(
                    f"fault path {route!r} must look like 'POST /v1/customers/{{id}}'"
                )

    def to_json(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "jitter_ms": self.jitter_ms,
            "jitter_distribution": self.jitter_distribution,
            "faults": {kind: float(self.faults.get(kind, 0.0)) for kind in FAULT_KINDS},
            "fault_paths": list(self.fault_paths),
            "rate_limit_global": self.rate_limit_global,
            "rate_limit_customer_update": self.rate_limit_customer_update,
            "lock_timeout": self.lock_timeout,
            "hang_seconds": self.hang_seconds,
            "late_arrival_seconds": self.late_arrival_seconds,
            "idempotency_ttl_seconds": self.idempotency_ttl_seconds,
            "seed": self.seed,
            "log_requests": self.log_requests,
            "capture_requests": self.capture_requests,
            "batch_lines_per_second": self.batch_lines_per_second,
            "batch_upload_ttl_seconds": self.batch_upload_ttl_seconds,
            "batch_timeout_at_fraction": self.batch_timeout_at_fraction,
            "batch_lose_uploads": self.batch_lose_uploads,
            "api_key_required": self.api_key is not None,
        }

    def merged(self, patch: Mapping[str, Any]) -> EmulatorConfig:
        """A new config with ``patch`` (JSON-ish values) applied. Raises ConfigError."""
        changes: dict[str, Any] = {}
        for key, value in patch.items():
            if key in READ_ONLY_KEYS:
                continue
            if key == "api_key" or key not in _FIELD_TYPES:
                raise ConfigError(f"unknown config key {key!r}")
            changes[key] = _coerce(key, _FIELD_TYPES[key], value)
        return dataclasses.replace(self, **changes)


_FIELD_TYPES: dict[str, str] = {
    "latency_ms": "float",
    "jitter_ms": "float",
    "jitter_distribution": "str",
    "faults": "rates",
    "fault_paths": "paths",
    "rate_limit_global": "float",
    "rate_limit_customer_update": "float",
    "lock_timeout": "bool",
    "hang_seconds": "float",
    "late_arrival_seconds": "float",
    "idempotency_ttl_seconds": "float",
    "seed": "seed",
    "log_requests": "bool",
    "capture_requests": "bool",
    "batch_lines_per_second": "float",
    "batch_upload_ttl_seconds": "float",
    "batch_timeout_at_fraction": "float",
    "batch_lose_uploads": "count",
}


def _coerce(key: str, kind: str, value: Any) -> Any:
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number")
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false")
        return value
    if kind == "count":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{key} must be a whole number >= 0")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string")
        return value
    if kind == "seed":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{key} must be an integer or null")
        return value
    if kind == "paths":
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key} must be a list of strings")
        return tuple(value)
    # rates
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be an object of kind -> probability")
    rates: dict[str, float] = {}
    for kind_name, rate in value.items():
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise ConfigError(f"fault rate for {kind_name} must be a number")
        rates[str(kind_name)] = float(rate)
    return rates


def parse_fault_rate(text: str) -> tuple[str, float]:
    """``error_500=0.1`` (the CLI's ``--fault`` form)."""
    kind, sep, rate = text.partition("=")
    if not sep:
        raise ConfigError(f"--fault takes KIND=RATE, got {text!r}")
    try:
        value = float(rate)
    except ValueError:
        raise ConfigError(f"--fault rate must be a number, got {rate!r}") from None
    return kind.strip(), value

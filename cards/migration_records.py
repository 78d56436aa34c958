"""A migration's record in Redis: its shape and state, shared by the writer and readers.

``cards migrate`` (:mod:`producers.migrate.store`) writes records under
``cards:migration:<id>``; the worker's metrics read them. :func:`migration_state`
(pure) says what a migration is doing. Keys and states in full: docs/migrations.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, Final

__all__ = [
    "KEY_PREFIX",
    "RECORD_TTL_SECONDS",
    "STALL_SECONDS",
    "LineOutcome",
    "MigrationRecord",
    "MigrationState",
    "migration_state",
]

#: How long a migration's record outlives its last change.
RECORD_TTL_SECONDS: Final = 30 * 24 * 3600
#: A running migration without progress for this long is stalled.
STALL_SECONDS: Final = 60.0
KEY_PREFIX: Final = "cards:migration:"


class LineOutcome(StrEnum):
    DONE = "done"
    FAILED = "failed"
    INVALID = "invalid"
    #: A row not applied because a newer request for its customer won (batch-api engine).
    SUPERSEDED = "superseded"


class MigrationState(StrEnum):
    RUNNING = "running"
    STALLED = "stalled"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class MigrationRecord:
    """A migration's file, report and counts, as the store has them."""

    id: str
    file: str
    format: str
    sha256: str
    report: str
    #: ``rows`` (jobs on the bulk queue) or ``batch-api`` (Stripe's Batch Jobs API).
    engine: str = "rows"
    rows: int = 0
    valid: int = 0
    invalid: int = 0
    done: int = 0
    failed: int = 0
    superseded: int = 0
    sent_through: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    completed_at: float = 0.0
    interrupted_at: float = 0.0

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.invalid + self.superseded

    @property
    def complete(self) -> bool:
        return self.completed_at > 0

    def as_dict(self) -> dict[str, Any]:
        view = {f.name: getattr(self, f.name) for f in fields(self)}
        view["finished"] = self.finished
        view["remaining"] = max(self.rows - self.finished, 0)
        return view

    @classmethod
    def from_hash(cls, migration_id: str, raw: Mapping[bytes, bytes]) -> MigrationRecord:
        text = {k.decode(): v.decode() for k, v in raw.items()}
        numbers: dict[str, Any] = {}
        for spec in fields(cls):
            if spec.name in text and spec.type in ("int", "float"):
                numbers[spec.name] = (
                    int(text[spec.name]) if spec.type == "int" else float(text[spec.name])
                )
        return cls(
            id=migration_id,
            file=text.get("file", ""),
            format=text.get("format", ""),
            sha256=text.get("sha256", ""),
            report=text.get("report", ""),
            engine=text.get("engine", "rows"),
            **numbers,
        )


def migration_state(
    record: MigrationRecord, now: float, stall_seconds: float = STALL_SECONDS
) -> MigrationState:
    """What a migration is doing, from its record. (Pure.)"""
    if record.complete:
        return MigrationState.FAILED if record.failed or record.invalid else MigrationState.DONE
    if record.interrupted_at or now - record.updated_at > stall_seconds:
        return MigrationState.STALLED
    return MigrationState.RUNNING

"""A migration's record in Redis, so that a killed producer can resume.

``cards:migration:<id>`` (hash) holds the file's facts, the report's path, the
counts and ``sent_through`` (no line above it was ever sent);
``cards:migration:<id>:lines`` (bitmap) has a bit per finished line; a batch-api
migration keeps its running Stripe batch job per account as ``batch_job:<account>``
(``<job id> <start>``). A line is
finished at most once: its bit and its count change together in one Lua script
(``lua/finish.lua``). Both keys expire ``RECORD_TTL_SECONDS`` after the last
change. :func:`migration_state` (pure) reads a record's state. Keys and states
in full: docs/migrations.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

import redis

from cards.lua_scripts import read_lua
from cards.migration_records import (
    KEY_PREFIX,
    RECORD_TTL_SECONDS,
    LineOutcome,
    MigrationRecord,
)
from cards.results import ResultBackend
from producers.client import producer_app

__all__ = ["BATCH_JOB_FIELD", "MigrationStore", "migration_store"]

#: A batch-api migration's running batch job for one account: ``batch_job:<account>``.
BATCH_JOB_FIELD = "batch_job:"


class MigrationStore:
    """Migration records in Redis (keys: see the module docstring)."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._finish = client.register_script(read_lua("producers.migrate", "finish.lua"))
        self._sent_through = client.register_script(
            read_lua("producers.migrate", "sent_through.lua")
        )

    @staticmethod
    def _keys(migration_id: str) -> tuple[str, str]:
        return f"{KEY_PREFIX}{migration_id}", f"{KEY_PREFIX}{migration_id}:lines"

    def get(self, migration_id: str) -> MigrationRecord | None:
        raw = cast(dict[bytes, bytes], self._redis.hgetall(self._keys(migration_id)[0]))
        return MigrationRecord.from_hash(migration_id, raw) if raw else None

    def begin(
        self,
        migration_id: str,
        *,
        file: str,
        file_format: str,
        sha256: str,
        report: str,
        rows: int,
        valid: int,
        engine: str = "rows",
    ) -> MigrationRecord:
        """Create the record, or refresh a resumed one's file facts; counts are kept."""
        record_key, lines_key = self._keys(migration_id)
        now = time.time()
        pipe = self._redis.pipeline()
        pipe.hsetnx(record_key, "created_at", now)
        pipe.hset(
            record_key,
            mapping={
                "file": file,
                "format": file_format,
                "sha256": sha256,
                "report": report,
                "engine": engine,
                "rows": rows,
                "valid": valid,
                "updated_at": now,
                "completed_at": 0,
                "interrupted_at": 0,
            },
        )
        pipe.expire(record_key, RECORD_TTL_SECONDS)
        pipe.expire(lines_key, RECORD_TTL_SECONDS)
        pipe.execute()
        record = self.get(migration_id)
        assert record is not None
        return record

    def finished_lines(self, migration_id: str, lines: Sequence[int]) -> list[bool]:
        """Whether each line is finished, in one round trip."""
        if not lines:
            return []
        lines_key = self._keys(migration_id)[1]
        pipe = self._redis.pipeline(transaction=False)
        for line in lines:
            pipe.getbit(lines_key, line)
        return [bool(bit) for bit in pipe.execute()]

    def mark_sent_through(self, migration_id: str, line: int) -> None:
        self._sent_through(keys=[self._keys(migration_id)[0]], args=[line, time.time()])

    def finish(self, migration_id: str, outcomes: Iterable[tuple[int, LineOutcome]]) -> int:
        """Mark lines finished and count each once; how many were not finished before."""
        args: list[Any] = [RECORD_TTL_SECONDS, time.time()]
        for line, outcome in outcomes:
            args.extend((line, str(outcome)))
        if len(args) == 2:
            return 0
        return int(self._finish(keys=list(self._keys(migration_id)), args=args))

    def finished_bitmap(self, migration_id: str) -> bytes:
        """The bitmap of finished lines (bit n: line n), in one round trip."""
        return cast(bytes | None, self._redis.get(self._keys(migration_id)[1])) or b""

    def now(self) -> float:
        """Redis's clock, the one the worker's newest-request records use."""
        seconds, micros = self._redis.time()
        return seconds + micros / 1e6

    def batch_jobs(self, migration_id: str) -> dict[str, tuple[str, float]]:
        """The running batch job of each account: (job id, its start on Redis's clock)."""
        raw = cast(dict[bytes, bytes], self._redis.hgetall(self._keys(migration_id)[0]))
        jobs = {}
        for field, value in raw.items():
            name = field.decode()
            if name.startswith(BATCH_JOB_FIELD):
                job_id, _, since = value.decode().partition(" ")
                jobs[name.removeprefix(BATCH_JOB_FIELD)] = (job_id, float(since or 0))
        return jobs

    def set_batch_job(self, migration_id: str, account: str, job_id: str, since: float) -> None:
        key = self._keys(migration_id)[0]
        self._redis.hset(key, BATCH_JOB_FIELD + account, f"{job_id} {since!r}")

    def clear_batch_job(self, migration_id: str, account: str) -> None:
        self._redis.hdel(self._keys(migration_id)[0], BATCH_JOB_FIELD + account)

    def complete(self, migration_id: str) -> None:
        self._redis.hset(self._keys(migration_id)[0], "completed_at", time.time())

    def interrupt(self, migration_id: str) -> None:
        """Record that the producer was stopped (Ctrl-C): the migration is stalled."""
        self._redis.hset(self._keys(migration_id)[0], "interrupted_at", time.time())

    def all(self) -> list[MigrationRecord]:
        """Every migration still recorded, oldest first."""
        records = []
        for key in self._redis.scan_iter(match=f"{KEY_PREFIX}*", count=1000):
            name = key.decode()
            if name.endswith(":lines"):
                continue
            record = self.get(name.removeprefix(KEY_PREFIX))
            if record is not None:
                records.append(record)
        return sorted(records, key=lambda record: (record.created_at, record.id))


def migration_store() -> MigrationStore:
    """The store in the producer's result-backend Redis."""
    return MigrationStore(ResultBackend(producer_app()).client)

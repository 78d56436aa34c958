"""What the migration benchmarks share: a stack, a migration file, a timed ``cards migrate``.

A benchmark runs on a private real ``redis-server``, the Stripe emulator and real
``celery worker`` processes (:mod:`harness.processes`). Our side is the real
``cards migrate`` command as a subprocess (:mod:`bench.support`), timed by the
migration's own record from its first send to its last result; the baseline is
a plain Celery task (:mod:`bench.baseline`) sent one message per row from this
process, timed from the first send to the last result.

Parameters:
    API_KEY: the emulator's key (a test key, not a secret).
    RESULT_TIMEOUT_SECONDS: longest wait for one baseline result.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from celery import Celery
from celery.result import AsyncResult

from bench.support import finish_migrate, run_migrate
from harness.processes import (
    BULK_POOL,
    CeleryWorker,
    RedisServer,
    child_pids,
    client_app,
    run_redis,
    start_worker,
)
from producers.migrate.store import MigrationStore
from stripe_emulator.process import EmulatorProcess, run_emulator

__all__ = [
    "API_KEY",
    "Stack",
    "Timed",
    "cpu_seconds",
    "median",
    "rss_bytes",
    "run_baseline",
    "run_migration",
    "stack",
]

API_KEY: Final = "sk_test_bench_0123456789"
RESULT_TIMEOUT_SECONDS: Final = 600
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def _with_children(pid: int) -> list[int]:
    """A process and its direct children (a worker's pool, or its sibling processes)."""
    return [pid, *child_pids(pid)]


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its direct children (the pool)."""
    total = 0
    for p in _with_children(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        total += int(found.group(1)) * 1024 if found else 0
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads, and its direct children (the pool)."""
    total = 0
    for p in _with_children(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


@dataclass
class Stack:
    redis: RedisServer
    emulator: EmulatorProcess
    env: dict[str, str]
    app: Celery
    logs: Path

    def worker(
        self,
        name: str,
        *,
        concurrency: int,
        queue: str,
        app_module: str = "worker",
        env: Mapping[str, str] | None = None,
    ) -> CeleryWorker:
        return start_worker(
            {**self.env, **(env or {})},
            self.logs / f"{name}.log",
            concurrency=concurrency,
            name=name,
            extra_args=("-Q", queue, *BULK_POOL),
            app_module=app_module,
        )


@contextmanager
def stack(
    logs: Path, *, latency_ms: float = 0, emulator_args: Sequence[str] = ()
) -> Iterator[Stack]:
    with (
        run_redis() as redis_server,
        run_emulator(api_key=API_KEY, latency_ms=latency_ms, extra_args=emulator_args) as emulator,
    ):
        env = {
            "CELERY_BROKER_URL": redis_server.url(),
            "CELERY_RESULT_BACKEND": redis_server.url(),
            "STRIPE_API_KEY": API_KEY,
            "STRIPE_API_BASE": emulator.url,
        }
        yield Stack(redis_server, emulator, env, client_app(redis_server.url()), logs)


@dataclass
class Timed:
    seconds: float
    worker_cpu_seconds: float
    output: str


def run_migration(
    path: Path, migration_id: str, s: Stack, worker: CeleryWorker, *args: str
) -> Timed:
    """``cards migrate run FILE --quiet --id ID`` to its end; fails loudly unless every row is done.

    ``seconds`` runs from the migration's start (after the file scan, before
    the first send) to its last result, as recorded by the migration itself:
    the span the baseline is timed over too.
    """
    cpu_before = cpu_seconds(worker.process.pid)
    log = s.logs / f"{migration_id}.out"
    run = finish_migrate(
        run_migrate(path, s.env, log, ("--id", migration_id, *args)), time.monotonic(), log
    )
    cpu = cpu_seconds(worker.process.pid) - cpu_before
    if run.exit_code != 0 or run.done != run.rows:
        raise RuntimeError(f"cards migrate exited {run.exit_code}:\n{run.output}")
    record = MigrationStore(s.redis.client()).get(migration_id)
    assert record is not None and record.complete
    return Timed(record.completed_at - record.created_at, cpu, run.output)


def run_baseline(
    app: Celery, worker: CeleryWorker, customers: Sequence[Mapping[str, Any]], card: int
) -> Timed:
    """One plain task per customer; fails loudly unless every one succeeded."""
    cpu_before = cpu_seconds(worker.process.pid)
    started = time.monotonic()
    ids = [
        app.send_task(
            "baseline.set_default_card",
            kwargs={"userId": c["id"], "default_source": c["cards"][card]},
            queue="baseline",
        ).id
        for c in customers
    ]
    failed = 0
    for job_id in ids:
        value: Any = AsyncResult(job_id, app=app).get(
            timeout=RESULT_TIMEOUT_SECONDS, propagate=False
        )
        failed += not (isinstance(value, dict) and value.get("status") is True)
    seconds = time.monotonic() - started
    if failed:
        raise RuntimeError(f"baseline: {failed} of {len(ids)} jobs did not succeed")
    return Timed(seconds, cpu_seconds(worker.process.pid) - cpu_before, "")

"""Helpers shared by the P3 and P4 benchmarks: the machine line, the migration CLI, the ledger.

A migration is always driven through the real ``cards migrate`` command as a
subprocess, so a benchmark measures whatever execution path the bulk queue has
(one job per row or batches of rows), exactly as an operator would run it.

Parameters:
    CLI_TIMEOUT_SECONDS: a migration that has not finished by then is a failed run.
    CUSTOMER_UPDATE_PATH: the emulator ledger's path of ``POST /v1/customers/{id}``.
    RATE_LIMIT_KEYS: the shared limiter's Redis keys (see ``worker.ratelimit``).
"""

from __future__ import annotations

import csv
import math
import os
import platform
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import redis

from harness.processes import BIN, REPO_ROOT
from stripe_emulator.process import EmulatorProcess
from worker.ratelimit import KEY_PREFIX

__all__ = [
    "CliRun",
    "UpdateCounts",
    "customer_updates",
    "forget_rate_limits",
    "machine_line",
    "percentile",
    "run_migrate",
    "write_rows",
]

CLI_TIMEOUT_SECONDS: Final = 1800
CUSTOMER_UPDATE_PATH: Final = re.compile(r"/v1/customers/[^/]+")
RATE_LIMIT_KEYS: Final = KEY_PREFIX + "*"
#: The CLI's summary line: "migration m…: N rows, D done, F failed, I invalid".
SUMMARY: Final = re.compile(r"(\d+) rows, (\d+) done, (\d+) failed, (\d+) invalid")


def machine_line() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average at start {load}"
    )


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with ``fraction`` of the values at or below."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def write_rows(path: Path, customers: Sequence[Mapping[str, Any]], card_index: int = 0) -> None:
    """A migration file: ``userId,default_source``, one row per customer."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("userId", "default_source"))
        for customer in customers:
            writer.writerow((customer["id"], customer["cards"][card_index]))


@dataclass(frozen=True)
class CliRun:
    """One ``cards migrate`` run: wall time from spawn to exit, its exit code and summary."""

    seconds: float
    exit_code: int
    rows: int
    done: int
    failed: int
    output: str


def run_migrate(
    path: Path, env: Mapping[str, str], log_path: Path, extra_args: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """Start ``cards migrate run FILE --quiet`` (the real CLI); its output goes to ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [str(BIN / "cards"), "migrate", "run", str(path), "--quiet", *extra_args],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def finish_migrate(process: subprocess.Popen[bytes], started: float, log_path: Path) -> CliRun:
    """Wait for a ``cards migrate`` started at ``started`` (monotonic) and read its summary."""
    code = process.wait(CLI_TIMEOUT_SECONDS)
    seconds = time.monotonic() - started
    output = log_path.read_text(errors="replace")
    found = SUMMARY.findall(output)
    rows, done, failed, _invalid = (int(x) for x in found[-1]) if found else (0, 0, 0, 0)
    return CliRun(seconds, code, rows, done, failed, output)


@dataclass(frozen=True)
class UpdateCounts:
    """``POST /v1/customers/{id}`` requests the emulator answered, from its ledger events."""

    requests: int
    ok: int
    rate_limited: int
    first_start: float
    last_end: float

    @property
    def span_seconds(self) -> float:
        return self.last_end - self.first_start


def customer_updates(emulator: EmulatorProcess) -> UpdateCounts:
    """Count customer updates since the last ledger reset (every write is an event)."""
    ledger = emulator.admin.ledger()
    if ledger["events_dropped"]:
        raise RuntimeError("the emulator dropped ledger events; counts would be wrong")
    events = [
        e
        for e in ledger["events"]
        if e["method"] == "POST" and CUSTOMER_UPDATE_PATH.fullmatch(e["path"])
    ]
    if not events:
        return UpdateCounts(0, 0, 0, 0.0, 0.0)
    return UpdateCounts(
        requests=len(events),
        ok=sum(1 for e in events if e["status"] == 200),
        rate_limited=sum(1 for e in events if e["status"] == 429),
        first_start=min(e["t_start"] for e in events),
        last_end=max(e["t_end"] for e in events),
    )


def forget_rate_limits(client: redis.Redis) -> int:
    """Drop the shared limiter's buckets and AIMD state, as after a quiet hour (their TTL)."""
    keys = list(client.scan_iter(match=RATE_LIMIT_KEYS))
    return int(client.delete(*keys)) if keys else 0

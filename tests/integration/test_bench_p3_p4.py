"""Benchmarks P3 and P4 run at smoke size and print their figures.

Only that they run is asserted: exit 0, every run's figures printed and the
goal line present. Whether a goal is met is a benchmark's result, not a test's
(timings on a shared machine belong in BENCHMARKS.md).
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from harness.processes import BIN, REPO_ROOT, run_bounded

TIMEOUT_SECONDS = 240


def run_bench(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_bounded(
        [str(BIN / "python"), "-m", module, "--smoke", "--json", *args],
        cwd=REPO_ROOT,
        timeout=TIMEOUT_SECONDS,
    )


def figures(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_p3_budget_benchmark_runs_at_smoke_size() -> None:
    done = run_bench("bench.p3_budget")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "machine: " in done.stdout
    assert "median achieved" in done.stdout
    assert "P3 goal " in done.stdout
    (run,) = figures(done)["runs"]
    assert run["done"] == run["rows"] > 0
    assert run["update_requests"] >= run["rows"]
    assert run["achieved_per_second"] > 0


def test_p4_live_latency_benchmark_runs_at_smoke_size() -> None:
    done = run_bench("bench.p4_live_latency")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "machine: " in done.stdout
    assert "ratio p99 during/alone" in done.stdout
    assert "P4 goal " in done.stdout
    (run,) = figures(done)["runs"]
    assert run["alone_jobs"] > 0 and run["during_jobs"] > 0
    assert run["failed_live"] == 0
    assert run["migration_done"] == run["migration_rows"] > 0
    assert run["alone_p99_ms"] > 0 and run["during_p99_ms"] > 0

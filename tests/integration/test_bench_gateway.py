"""The gateway benchmark (``make bench-gateway``) runs at smoke size and prints its figures.

Only that it runs is asserted: every side measured, every waiting request
answered, the overload shed and recovered, the goal lines printed. Whether a
goal is met is the benchmark's result (BENCHMARKS.md), not a test's.
"""

from __future__ import annotations

import json
import subprocess

from harness.processes import BIN, REPO_ROOT

TIMEOUT_SECONDS = 600


def test_gateway_benchmark_runs_at_smoke_size() -> None:
    done = subprocess.run(
        [str(BIN / "python"), "-m", "bench.gateway", "--smoke", "--json"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for line in ("machine: ", "wait at concurrency", "waiting req/s", "CPU per 202", "overload:"):
        assert line in done.stdout
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert {s["name"] for s in figures["sides"]} == {"poll-1", "push-1", "push-2", "202-push-1"}
    assert all(s["per_second"] > 0 for s in figures["sides"])
    assert figures["overload"]["shed"] > 0

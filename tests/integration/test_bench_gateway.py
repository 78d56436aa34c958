"""The gateway benchmark (``make bench-gateway``) runs at smoke size and prints its figures.

Only that it runs is asserted: every side measured, every waiting request
answered, every part's CPU per request for push-1, the overload shed and
recovered, the goal lines printed. Whether a goal is met is the benchmark's
result (BENCHMARKS.md), not a test's. The budget arithmetic is table-tested.
"""

from __future__ import annotations

import json

import pytest

from bench.gateway import gateway_cpu_budget
from harness.processes import BIN, REPO_ROOT, run_bounded

TIMEOUT_SECONDS = 600


def test_gateway_benchmark_runs_at_smoke_size() -> None:
    done = run_bounded(
        [str(BIN / "python"), "-m", "bench.gateway", "--smoke", "--json"],
        cwd=REPO_ROOT,
        timeout=TIMEOUT_SECONDS,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (
        "machine: ",
        "wait at concurrency",
        "CPU ms per waiting request (push-1)",
        "waiting req/s",
        "CPU per 202",
        "overload:",
    )
    for line in lines:
        assert line in done.stdout
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert {s["name"] for s in figures["sides"]} == {"poll-1", "push-1", "push-2", "202-push-1"}
    assert all(s["per_second"] > 0 for s in figures["sides"])
    [push] = [s for s in figures["sides"] if s["name"] == "push-1"]
    assert set(push["parts_cpu_ms"]) == {"gateway", "worker", "redis", "emulator", "client"}
    assert push["parts_cpu_ms"]["worker"] > 0
    assert figures["overload"]["shed"] > 0


@pytest.mark.parametrize(
    ("parts", "cores", "per_second", "budget"),
    [
        ({"gateway": 2.0, "worker": 5.0, "redis": 1.0}, 2, 200.0, 4.0),  # 10 ms - 6 ms
        ({"gateway": 9.0, "worker": 5.0}, 1, 100.0, 5.0),  # the gateway's own cost is not "rest"
        ({"worker": 12.0}, 2, 200.0, -2.0),  # not even a gateway costing nothing
        ({}, 2, 250.0, 8.0),
    ],
)
def test_the_gateways_cpu_budget(
    parts: dict[str, float], cores: int, per_second: float, budget: float
) -> None:
    assert gateway_cpu_budget(parts, cores, per_second) == pytest.approx(budget)

"""The gateway benchmark (``make bench-gateway``) runs at smoke size and prints its figures.

Only that it runs is asserted: every side measured, every waiting request
answered, every part's CPU per request for push-1, the gateway measured alone
with the stand-in worker answering (and the gateway before push waits, from its
commit), the overload shed and recovered, the goal lines printed; the
before/after matrix the same way. Whether a goal is met is the benchmark's
result (BENCHMARKS.md), not a test's. The budget arithmetic is table-tested.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from bench.gateway import (
    BEFORE_COMMIT,
    SMOKE_ALONE_CONCURRENCY,
    SMOKE_CONCURRENCY,
    capacity_verdict,
    closed_loop_ceiling,
    gateway_cpu_budget,
    shed_in_gateway_ms,
)
from bench.gateway_matrix import SMOKE_CONCURRENCY as MATRIX_CONCURRENCY
from bench.gateway_matrix import SMOKE_LATENCIES, VERSIONS
from harness.processes import BIN, REPO_ROOT, run_bounded

TIMEOUT_SECONDS = 600


def since() -> list[str]:
    """``--before`` and the commit the before side runs: the benchmark's own when this
    checkout has it, else HEAD (a shallow clone), which exercises the same export and
    start-up."""
    has = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "cat-file", "-e", f"{BEFORE_COMMIT}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    return ["--before", BEFORE_COMMIT if has.returncode == 0 else "HEAD"]


def test_gateway_benchmark_runs_at_smoke_size() -> None:
    done = run_bounded(
        [str(BIN / "python"), "-m", "bench.gateway", "--smoke", "--json", *since()],
        cwd=REPO_ROOT,
        timeout=TIMEOUT_SECONDS,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (
        "machine: ",
        "wait at concurrency",
        "CPU ms per waiting request (push-1)",
        "waiting req/s",
        "the gateway alone (a stand-in worker answering after 200 ms): wait at",
        "the gateway alone: waiting req/s at concurrency",
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
    assert figures["overload"]["shed_in_gateway_p99_ms"] >= 0  # read from the access log
    alone = {(s["name"], s["concurrency"]): s for s in figures["alone"]}
    assert set(alone) == {
        ("alone-push-1", SMOKE_CONCURRENCY),
        ("before-1", SMOKE_ALONE_CONCURRENCY),  # the gateway before push waits
        ("alone-poll-1", SMOKE_ALONE_CONCURRENCY),
        ("alone-push-1", SMOKE_ALONE_CONCURRENCY),
        ("alone-push-2", SMOKE_ALONE_CONCURRENCY),
    }
    for side in alone.values():
        assert side["statuses"] == {"200": side["requests"]}  # the stand-in answered each
        assert set(side["parts_cpu_ms"]) == {"gateway", "stand-in", "redis", "client"}


def test_gateway_matrix_runs_at_smoke_size() -> None:
    done = run_bounded(
        [str(BIN / "python"), "-m", "bench.gateway_matrix", "--smoke", "--json", *since()],
        cwd=REPO_ROOT,
        timeout=TIMEOUT_SECONDS,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    cells = {(r["name"], r["mode"], r["latency_ms"], r["concurrency"]) for r in rows}
    versions = [name for name, _, _ in VERSIONS]
    sizes = [int(c) for c in MATRIX_CONCURRENCY.split(",")]
    waits = {
        (v, "wait", int(ms), c)
        for v in versions
        for ms in SMOKE_LATENCIES.split(",")
        for c in sizes
    }
    enqueues = {(v, "enqueue", None, c) for v in versions for c in sizes}
    assert cells == waits | enqueues
    for row in rows:
        taken = "200" if row["mode"] == "wait" else "202"
        assert row["statuses"] == {taken: row["requests"]}, row  # every job taken
        assert row["rss_mb"] > 0 and row["cpu_ms_per_request"] > 0


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


@pytest.mark.parametrize(
    ("concurrency", "wait_ms", "ceiling"),
    [(50, 220.0, 227.27), (200, 220.0, 909.09), (10, 1000.0, 10.0)],
)
def test_a_closed_loops_ceiling(concurrency: int, wait_ms: float, ceiling: float) -> None:
    assert closed_loop_ceiling(concurrency, wait_ms) == pytest.approx(ceiling, abs=0.01)


@pytest.mark.parametrize(
    ("baseline", "ratio", "ceiling", "verdict"),
    [
        (265.7, 3.30, 909.1, "goal >= 2x: met"),
        (400.0, 1.90, 909.1, "goal >= 2x: NOT met"),
        # 50 clients answered in 220 ms send 227 req/s: 2x of 125 is out of their reach
        (
            125.7,
            1.69,
            227.3,
            "goal >= 2x not judged here: 251 req/s is more than these "
            "clients send when answered within the wait goal, 227",
        ),
    ],
)
def test_the_capacity_verdict(baseline: float, ratio: float, ceiling: float, verdict: str) -> None:
    assert capacity_verdict(baseline, ratio, ceiling) == verdict


@pytest.mark.parametrize(
    ("log", "times"),
    [
        ('{"ts": 1.0, "method": "POST", "path": "/x", "status": 503, "ms": 0.04}', [0.04]),
        ('{"ts": 1.0, "method": "POST", "path": "/x", "status": 200, "ms": 210.5}', []),
        ("INFO:     Uvicorn running on http://127.0.0.1:8000", []),
        (
            '[1, 2]\n{"status": 503}\n{"status": 503, "ms": 1.5}\n{"status": 503, "ms": 2}',
            [1.5, 2.0],
        ),
        ("", []),
    ],
)
def test_a_503s_time_in_the_gateway_is_read_from_its_access_lines(
    log: str, times: list[float]
) -> None:
    assert shed_in_gateway_ms(log) == times

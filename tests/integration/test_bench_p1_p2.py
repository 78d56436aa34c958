"""Benchmarks P1 and P2 run at smoke size and print their figures.

Only that they run is asserted (see tests/integration/test_bench_p3_p4.py).
"""

from __future__ import annotations

from tests.integration.test_bench_p3_p4 import figures, run_bench


def test_p1_throughput_benchmark_runs_at_smoke_size() -> None:
    done = run_bench("bench.p1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "machine: " in done.stdout
    assert "median worker CPU-s per 1000 jobs" in done.stdout
    result = figures(done)
    assert len(result["ours"]) == len(result["baseline"]) == 1
    assert result["ours"][0]["jobs_per_second"] > 0
    assert result["ratio"] > 0


def test_p2_budget_benchmark_runs_at_smoke_size() -> None:
    done = run_bench("bench.p2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "machine: " in done.stdout
    assert "of the budget" in done.stdout
    result = figures(done)
    assert len(result["jobs_per_second"]["ours"]) == 1
    assert result["jobs_per_second"]["ours"][0] > 0

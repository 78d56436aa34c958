"""The live benchmark (``make bench-live``) runs at smoke size and prints its figures.

Only that it runs is asserted: every side measured at both latencies (with
``--before`` given this very tree, as a second version's side), every job
answered, the goal lines printed. Whether a goal is met is the benchmark's
result (BENCHMARKS.md), not a test's.
"""

from __future__ import annotations

import json

from harness.processes import BIN, REPO_ROOT, run_bounded

TIMEOUT_SECONDS = 240


def test_live_benchmark_runs_at_smoke_size() -> None:
    done = run_bounded(
        [str(BIN / "python"), "-m", "bench.live", "--smoke", "--json", "--before", str(REPO_ROOT)],
        cwd=REPO_ROOT,
        timeout=TIMEOUT_SECONDS,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "machine: " in done.stdout
    assert "live goals: " in done.stdout
    assert "ours / ours-before: " in done.stdout
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    sides = {(r["side"], r["latency_ms"]) for r in figures["runs"]}
    assert sides == {
        (side, latency)
        for side in ("ours", "ours-before", "celery-prefork", "celery-threads")
        for latency in (0.0, 300.0)
    }
    assert all(r["ok"] == r["jobs"] > 0 for r in figures["runs"])
    assert all(r["jobs_per_second"] > 0 and r["rss_mb"] > 0 for r in figures["runs"])

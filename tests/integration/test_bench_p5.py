"""The P5 benchmark runs end to end at its smoke size and prints every figure.

Not a timed test: the goals are judged by ``python -m bench.p5_file`` at full
size, on a quiet machine; here only that it runs and reports.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from harness.processes import REPO_ROOT, run_bounded

#: Start-up of Redis, the emulator and a worker, plus the smoke's own six seconds.
SMOKE_TIMEOUT_SECONDS = 240


def test_the_p5_benchmark_runs_at_smoke_size_and_prints_its_figures(tmp_path: Path) -> None:
    figures_path = tmp_path / "p5.json"
    done = run_bounded(
        [sys.executable, "-m", "bench.p5_file", "--smoke", "--json", str(figures_path)],
        cwd=REPO_ROOT,
        env=dict(os.environ),
        timeout=SMOKE_TIMEOUT_SECONDS,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for expected in (
        "validate-only, 3,000 rows: 3000 rows: ",
        "rows/s (start-up included)",
        "peak RSS",
        "enqueue, window 50: covers ",
        "producer peak RSS",
        "bulk queue at most",
        "Redis used_memory: start",
        "growth after 25%",
        "Redis keys at the end, by kind",
    ):
        assert expected in out, out
    figures = json.loads(figures_path.read_text())
    checked, sent = figures["validate"], figures["enqueue"]
    assert checked["rows"] == 3000 and checked["median_rows_per_second"] > 0
    assert checked["peak_rss_mb"] > 0
    assert sent["rows_finished"] > 0 and sent["peak_rss_mb"] > 0
    assert sent["used_memory_max"] >= sent["used_memory_start"] > 0
    assert sent["samples"], "the enqueue phase took no sample"

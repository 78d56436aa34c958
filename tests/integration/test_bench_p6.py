"""The P6 benchmark runs end to end at its smoke size and prints every figure.

Not a timed test: the goals are judged by ``python -m bench.p6_batch`` at full size,
on a quiet machine; here only that it runs, reports, and finds every row correct.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from harness.processes import REPO_ROOT, run_bounded

SMOKE_TIMEOUT_SECONDS = 240


def test_the_p6_benchmark_runs_at_smoke_size_and_every_row_is_right(tmp_path: Path) -> None:
    figures_path = tmp_path / "p6.json"
    done = run_bounded(
        [sys.executable, "-m", "bench.p6_batch", "--smoke", "--json", str(figures_path)],
        cwd=REPO_ROOT,
        env=dict(os.environ),
        timeout=SMOKE_TIMEOUT_SECONDS,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for expected in ("P6, 3,000 rows (150 superseded)", "our side", "peak RSS", "per-row engine"):
        assert expected in done.stdout, done.stdout
    figures = json.loads(figures_path.read_text())
    assert figures["lines_reported_once"] and figures["customers_written_once"]
    assert figures["report_statuses"] == {"done": 2850, "superseded": 150}
    assert figures["writes_applied_total"] == 2850 and figures["peak_rss_mb"] > 0

"""P1: migration throughput at emulator latency 0 ms, against a plain Celery task.

Each run migrates ``--jobs`` customers with ``cards migrate`` (bulk batches on
a bulk worker), and sends the same number of plain tasks to the baseline
worker; runs alternate and each run writes a new card, so every job is a real
write. Both workers are prefork ``-c 2`` (the default on this 2-core machine),
each alone on its queue; the bulk side has no rate budget (P1 measures cost,
not pacing). Goal: ours at least 3 times the baseline's jobs/s, with worker CPU-seconds
per 1,000 jobs reported for both.

Usage::

    python -m bench.p1 [--jobs 5000] [--runs 3] [--smoke]

Parameters:
    GOAL_RATIO: ours / baseline jobs/s to meet.
    CONCURRENCY: pool processes on both sides.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Final

from bench.migrations import median, run_baseline, run_migration, stack
from bench.support import machine_line, write_rows
from cards.settings import get_settings

GOAL_RATIO: Final = 3.0
CONCURRENCY: Final = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="end with the figures as JSON")
    parser.add_argument("--smoke", action="store_true", help="60 jobs, 1 run: proves it runs")
    args = parser.parse_args(argv)
    jobs, runs = (60, 1) if args.smoke else (args.jobs, args.runs)
    settings = get_settings()

    with tempfile.TemporaryDirectory(prefix="cards-p1-") as tmp, stack(Path(tmp)) as s:
        customers = s.emulator.admin.seed(jobs, cards_per_customer=2)
        ours = s.worker("p1-ours", concurrency=CONCURRENCY, queue=settings.bulk_queue)
        baseline = s.worker(
            "p1-baseline", concurrency=CONCURRENCY, queue="baseline", app_module="bench.baseline"
        )
        figures: dict[str, list[tuple[float, float]]] = {"baseline": [], "ours": []}
        try:
            for run in range(runs):
                base = run_baseline(s.app, baseline, customers, card=0 if run % 2 else 1)
                figures["baseline"].append((jobs / base.seconds, base.worker_cpu_seconds))
                path = Path(tmp) / f"p1-{run}.csv"
                write_rows(path, customers, run % 2)
                mine = run_migration(path, f"p1-run{run}", s, ours)
                figures["ours"].append((jobs / mine.seconds, mine.worker_cpu_seconds))
        finally:
            ours.stop()
            baseline.stop()

    print(machine_line())
    print(
        f"P1: {jobs} jobs per run, {runs} runs, emulator latency 0 ms; prefork -c {CONCURRENCY} "
        f"both sides; ours: cards migrate, {settings.bulk_batch_rows} rows a message, "
        f"{settings.bulk_threads} row threads per process, no rate budget"
    )
    print(f"{'run':>3} {'side':<9} {'jobs/s':>8} {'cpu-s/1000':>10}")
    for run in range(runs):
        for side in ("baseline", "ours"):
            rate, cpu = figures[side][run]
            print(f"{run + 1:>3} {side:<9} {rate:>8.1f} {cpu * 1000 / jobs:>10.2f}")
    rate_ours = median([r for r, _ in figures["ours"]])
    rate_base = median([r for r, _ in figures["baseline"]])
    ratio = rate_ours / rate_base
    print(
        f"median jobs/s: ours {rate_ours:.1f}, baseline {rate_base:.1f}, ratio {ratio:.2f} "
        f"(goal ≥ {GOAL_RATIO:.1f}: {'met' if ratio >= GOAL_RATIO else 'NOT met'})"
    )
    print(
        "median worker CPU-s per 1000 jobs: "
        f"ours {median([c for _, c in figures['ours']]) * 1000 / jobs:.2f}, "
        f"baseline {median([c for _, c in figures['baseline']]) * 1000 / jobs:.2f}"
    )
    if args.json:
        print(
            json.dumps(
                {
                    side: [{"jobs_per_second": r, "worker_cpu_seconds": c} for r, c in runs_]
                    for side, runs_ in figures.items()
                }
                | {"ratio": ratio}
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

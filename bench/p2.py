"""P2: a migration at a 100/s budget while Stripe answers in 200 ms.

Each run migrates ``--jobs`` customers with ``cards migrate`` under
``CARDS_RATE_LIMITS=<bulk queue>=<budget>``, on one bulk worker (prefork
``-c 2``, the machine's default); the emulator answers every call after
``--latency-ms``. A plain Celery task (default prefork settings, one call at a
time per process) manages about 2 / 0.2 s = 10 jobs/s whatever the budget, so
the baseline runs ``--baseline-jobs`` jobs only (its rate does not depend on
the count), in the same run. Goal: ours at least 95 jobs/s, 95% of the budget.

Usage::

    python -m bench.p2 [--jobs 2000] [--baseline-jobs 200] [--runs 3] [--smoke]

Parameters:
    GOAL_JOBS_PER_SECOND: the rate to reach.
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

GOAL_JOBS_PER_SECOND: Final = 95.0
CONCURRENCY: Final = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--baseline-jobs", type=int, default=200)
    parser.add_argument("--budget", type=float, default=100.0, help="calls/s for the bulk queue")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="end with the figures as JSON")
    parser.add_argument("--smoke", action="store_true", help="40 jobs, 1 run: proves it runs")
    args = parser.parse_args(argv)
    jobs, baseline_jobs, runs = (
        (40, 10, 1) if args.smoke else (args.jobs, args.baseline_jobs, args.runs)
    )
    settings = get_settings()
    budget = {"CARDS_RATE_LIMITS": f"{settings.bulk_queue}={args.budget:g}"}

    with (
        tempfile.TemporaryDirectory(prefix="cards-p2-") as tmp,
        stack(Path(tmp), latency_ms=args.latency_ms) as s,
    ):
        customers = s.emulator.admin.seed(jobs, cards_per_customer=2)
        ours = s.worker("p2-ours", concurrency=CONCURRENCY, queue=settings.bulk_queue, env=budget)
        baseline = s.worker(
            "p2-baseline", concurrency=CONCURRENCY, queue="baseline", app_module="bench.baseline"
        )
        rates: dict[str, list[float]] = {"baseline": [], "ours": []}
        try:
            for run in range(runs):
                some = customers[:baseline_jobs]
                base = run_baseline(s.app, baseline, some, card=0 if run % 2 else 1)
                rates["baseline"].append(len(some) / base.seconds)
                path = Path(tmp) / f"p2-{run}.csv"
                write_rows(path, customers, run % 2)
                rates["ours"].append(jobs / run_migration(path, f"p2-run{run}", s, ours).seconds)
        finally:
            ours.stop()
            baseline.stop()

    print(machine_line())
    print(
        f"P2: {jobs} jobs per run (baseline {baseline_jobs}), {runs} runs, emulator latency "
        f"{args.latency_ms:g} ms, bulk budget {args.budget:g}/s; prefork -c {CONCURRENCY} both "
        f"sides; ours: cards migrate, {settings.bulk_batch_rows} rows a message, "
        f"{settings.bulk_threads} row threads per process"
    )
    print(f"{'run':>3} {'baseline jobs/s':>16} {'ours jobs/s':>12} {'ours/budget':>12}")
    for run in range(runs):
        ours_rate = rates["ours"][run]
        print(
            f"{run + 1:>3} {rates['baseline'][run]:>16.1f} {ours_rate:>12.1f} "
            f"{ours_rate / args.budget:>12.3f}"
        )
    ours_median, base_median = median(rates["ours"]), median(rates["baseline"])
    goal = GOAL_JOBS_PER_SECOND * args.budget / 100.0
    print(
        f"median jobs/s: ours {ours_median:.1f} ({ours_median / args.budget:.3f} of the budget), "
        f"baseline {base_median:.1f}, ratio {ours_median / base_median:.1f} "
        f"(goal ≥ {goal:.2f}/s: {'met' if ours_median >= goal else 'NOT met'})"
    )
    if args.json:
        print(json.dumps({"jobs_per_second": rates, "budget": args.budget}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""End-to-end throughput: our worker against a plain Celery task, in the same run.

Each run enqueues N jobs for N distinct customers on a fresh queue, then waits
for every result; throughput is N / (last result time - first enqueue time).
Both sides use a real ``redis-server`` (private, free port), real ``celery
worker`` processes started the same way (prefork, ``-c 2``, ``-l info``), and
the Stripe emulator at the given latency. Runs alternate between the two
sides; medians are reported. Worker CPU-seconds come from /proc for the worker
and its pool children during the measured window.

Usage::

    python -m bench.e2e [--jobs 1000] [--runs 3] [--latency-ms 0] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from celery import Celery
from celery.result import AsyncResult

from bench.migrations import cpu_seconds
from harness.processes import CeleryWorker, client_app, run_redis, start_worker
from producers import enqueue_set_default_card
from stripe_emulator.process import run_emulator

API_KEY = "sk_test_bench_0123456789"
RESULT_TIMEOUT_SECONDS = 600


@dataclass
class Run:
    side: str
    jobs: int
    seconds: float
    jobs_per_second: float
    worker_cpu_seconds_per_1000: float
    ok: int


def measure(
    side: str,
    worker: CeleryWorker,
    app: Celery,
    send: Callable[[dict[str, Any], int], str],
    customers: list[dict[str, Any]],
    run_index: int,
) -> Run:
    cpu_before = cpu_seconds(worker.process.pid)
    started = time.monotonic()
    ids = [send(customer, run_index) for customer in customers]
    ok = 0
    for job_id in ids:
        value: Any = AsyncResult(job_id, app=app).get(
            timeout=RESULT_TIMEOUT_SECONDS, propagate=False
        )
        ok += bool(isinstance(value, dict) and value.get("status") is True)
    seconds = time.monotonic() - started
    cpu = cpu_seconds(worker.process.pid) - cpu_before
    jobs = len(ids)
    return Run(
        side, jobs, round(seconds, 3), round(jobs / seconds, 1), round(cpu * 1000 / jobs, 2), ok
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)

    with (
        run_redis() as redis_server,
        run_emulator(api_key=API_KEY, latency_ms=args.latency_ms) as emulator,
        tempfile.TemporaryDirectory(prefix="cards-bench-") as tmp,
    ):
        customers = emulator.admin.seed(args.jobs, cards_per_customer=2)
        env = {
            "CELERY_BROKER_URL": redis_server.url(),
            "CELERY_RESULT_BACKEND": redis_server.url(),
            "STRIPE_API_KEY": API_KEY,
            "STRIPE_API_BASE": emulator.url,
        }
        app = client_app(redis_server.url())
        # Both prefork, as this benchmark has always compared them; the plain command's
        # own pool is measured against Celery's by bench.live.
        ours = start_worker(
            env,
            Path(tmp) / "ours.log",
            concurrency=args.concurrency,
            name="ours",
            extra_args=("-P", "prefork"),
        )
        baseline = start_worker(
            env,
            Path(tmp) / "baseline.log",
            concurrency=args.concurrency,
            name="baseline",
            app_module="bench.baseline",
        )

        def send_ours(customer: dict[str, Any], run: int) -> str:
            return enqueue_set_default_card(customer["id"], customer["cards"][run % 2], app=app)

        def send_baseline(customer: dict[str, Any], run: int) -> str:
            return str(
                app.send_task(
                    "baseline.set_default_card",
                    kwargs={"userId": customer["id"], "default_source": customer["cards"][run % 2]},
                    queue="baseline",
                ).id
            )

        runs: list[Run] = []
        try:
            for index in range(args.runs):
                # Fresh writes each time: alternate which card becomes the default.
                runs.append(measure("baseline", baseline, app, send_baseline, customers, 2 * index))
                runs.append(measure("ours", ours, app, send_ours, customers, 2 * index + 1))
        finally:
            ours.stop()
            baseline.stop()

    def median(side: str, field: str) -> float:
        return float(statistics.median(getattr(r, field) for r in runs if r.side == side))

    ratio = median("ours", "jobs_per_second") / median("baseline", "jobs_per_second")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"workers: prefork, -c {args.concurrency}, each alone on its queue; "
        f"emulator latency {args.latency_ms} ms; {args.jobs} jobs per run, {args.runs} runs"
    )
    print(f"{'side':<9} {'run':>3} {'seconds':>8} {'jobs/s':>8} {'cpu-s/1000':>10} {'ok':>6}")
    for i, r in enumerate(runs):
        print(
            f"{r.side:<9} {i // 2 + 1:>3} {r.seconds:>8} {r.jobs_per_second:>8} "
            f"{r.worker_cpu_seconds_per_1000:>10} {r.ok:>6}"
        )
    print(
        f"median jobs/s: ours {median('ours', 'jobs_per_second')}, "
        f"baseline {median('baseline', 'jobs_per_second')}, ratio {ratio:.2f}"
    )
    print(
        f"median worker CPU-s per 1000 jobs: ours "
        f"{median('ours', 'worker_cpu_seconds_per_1000')}, baseline "
        f"{median('baseline', 'worker_cpu_seconds_per_1000')}"
    )
    if args.json:
        print(json.dumps({"runs": [asdict(r) for r in runs], "ratio": round(ratio, 3)}))
    failed = sum(r.jobs - r.ok for r in runs)
    if failed:
        print(f"error: {failed} jobs did not end with status true", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

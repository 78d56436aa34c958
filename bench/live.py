"""Live jobs at Stripe's latency: the plain worker command against plain Celery, in one run.

Sides, each a real ``celery worker`` started with no pool or concurrency flag
unless named, all on one private ``redis-server`` and the Stripe emulator:

- ``ours``: ``celery -A worker worker`` (the documented command, its configured pool,
  one process per core by default);
- ``celery-prefork``: ``celery -A bench.baseline worker``, Celery's defaults (prefork,
  one process per core);
- ``celery-<pool>``: the same baseline with ``-P <pool> -c <n>``, the pool and size
  ours reports in its start-up banner;
- ``ours-before`` (``--before TREE``): ``celery -A worker worker`` run from another
  checkout (``git archive <commit> | tar -x -C TREE``), to compare two versions'
  CPU per job in one run.

For each emulator latency (``--latencies``, default 0 and 300 ms), each run
measures every side in turn: at 0 ms a backlog of ``--jobs`` sent at once
(capacity); at a real latency ``--jobs`` sent at ``--rate`` per second on a
fixed schedule (live traffic; the baseline prefork side gets ``--slow-jobs``,
since it manages about cores / latency whatever is offered). Every job is for
its own customer and writes a new default card. Jobs/s = jobs / (last envelope
- first send); latency = from just before the enqueue call to the envelope's
arrival on the result backend's pub/sub channel; CPU = the worker's main process
and its children (pool or sibling processes) from /proc over the side's window;
RSS = theirs at its end.
Medians over runs; ratios are between sides of the same run set.

Usage::

    python -m bench.live [--jobs 1500] [--runs 3] [--latencies 0,300] [--rate 110] [--smoke]
                         [--before TREE]

Parameters:
    DEFAULT_*: the full size; SMOKE_*: ``--smoke``, which only proves the benchmark runs.
    GOAL_*: what ours must reach at a real latency, and at 0 ms, against the baselines.
    POLL_SECONDS: how often the last envelopes are looked for (the last arrival is timed
        by the listener, not by this poll).
    DRAIN_SECONDS: how long to wait for a side's last envelope after its last send.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from celery import Celery

from bench.migrations import cpu_seconds, rss_bytes
from bench.p4_live_latency import ResultListener
from bench.support import machine_line, percentile
from cards.jobs import TASK_NAME
from cards.redaction import event_reprs
from harness.processes import CeleryWorker, client_app, nodes_of, run_redis, start_worker
from producers import enqueue_set_default_card
from producers.client import build_job
from stripe_emulator.process import run_emulator

API_KEY: Final = "sk_test_bench_0123456789"
PREFIX: Final = "live-"
DEFAULT_JOBS: Final = 1500
DEFAULT_SLOW_JOBS: Final = 100
DEFAULT_RUNS: Final = 3
DEFAULT_LATENCIES: Final = "0,300"
DEFAULT_RATE: Final = 110.0
SMOKE_JOBS: Final = 30
SMOKE_SLOW_JOBS: Final = 4
SMOKE_RATE: Final = 30.0
GOAL_LIVE_JOBS_PER_SECOND: Final = 100.0
GOAL_LIVE_RATIO: Final = 10.0
GOAL_IDLE_RATIO: Final = 1.0
DRAIN_SECONDS: Final = 120.0
POLL_SECONDS: Final = 0.1
#: The ours-before worker's queue (its own, so that the two workers never share jobs).
BEFORE_QUEUE: Final = "cards-before"
#: Celery's start-up banner: "concurrency: 64 (thread)".
BANNER: Final = re.compile(r"concurrency:\s+(\d+) \((\w+)\)")
#: Celery's banner names a pool by its kind; ``-P`` takes its alias.
POOL_ALIASES: Final = {"thread": "threads", "greenlet": "gevent"}

Send = Callable[[str, dict[str, Any], int], None]


@dataclass
class Run:
    side: str
    latency_ms: float
    run: int
    jobs: int
    seconds: float
    jobs_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_s_per_1000: float
    rss_mb: float
    ok: int


def measure(
    side: str,
    worker: CeleryWorker,
    send: Send,
    customers: list[dict[str, Any]],
    card: int,
    rate: float | None,
    listener: ResultListener,
    latency_ms: float,
    run: int,
) -> Run:
    """Send one job per customer (all at once, or ``rate`` per second) and time every envelope."""
    sent: dict[str, float] = {}
    cpu_before = cpu_seconds(worker.process.pid)
    started = time.monotonic()
    for index, customer in enumerate(customers):
        if rate is not None:
            delay = started + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        job_id = f"{PREFIX}{side}-{latency_ms:g}-{run}-{index}"
        sent[job_id] = time.monotonic()
        send(job_id, customer, card)
    deadline = time.monotonic() + DRAIN_SECONDS
    pending = list(sent)
    while pending and time.monotonic() < deadline:
        # Only the jobs still missing are looked up: this process's CPU is the machine's too.
        time.sleep(POLL_SECONDS)
        pending = [j for j in pending if listener.get(j) is None]
    cpu = cpu_seconds(worker.process.pid) - cpu_before
    arrivals = {j: got for j in sent if (got := listener.get(j)) is not None}
    latencies = [(arrivals[j][0] - sent[j]) * 1000 for j in arrivals]
    last = max((got[0] for got in arrivals.values()), default=time.monotonic())
    seconds = last - started
    jobs = len(sent)
    return Run(
        side=side,
        latency_ms=latency_ms,
        run=run,
        jobs=jobs,
        seconds=round(seconds, 3),
        jobs_per_second=round(len(arrivals) / seconds, 1),
        p50_ms=round(percentile(latencies, 0.5), 1),
        p99_ms=round(percentile(latencies, 0.99), 1),
        cpu_s_per_1000=round(cpu * 1000 / jobs, 2),
        rss_mb=round(rss_bytes(worker.process.pid) / 2**20, 1),
        ok=sum(1 for got in arrivals.values() if got[1]),
    )


def pool_of(worker: CeleryWorker) -> tuple[str, int]:
    """The pool alias and size a worker reports in its banner."""
    found = BANNER.search(worker.log)
    if found is None:
        raise RuntimeError(f"no concurrency line in the worker's banner:\n{worker.log[:3000]}")
    kind = found.group(2)
    return POOL_ALIASES.get(kind, kind), int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS)
    parser.add_argument("--slow-jobs", type=int, default=DEFAULT_SLOW_JOBS)
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    parser.add_argument(
        "--latencies", default=DEFAULT_LATENCIES, help="emulator ms, comma-separated"
    )
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="jobs/s sent at a latency")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that proves it works")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument(
        "--before", type=Path, help="another checkout whose worker runs as side ours-before"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.jobs, args.slow_jobs, args.runs, args.rate = SMOKE_JOBS, SMOKE_SLOW_JOBS, 1, SMOKE_RATE
    latencies = [float(x) for x in args.latencies.split(",")]
    print(machine_line())

    runs: list[Run] = []
    with (
        run_redis() as redis_server,
        run_emulator(api_key=API_KEY) as emulator,
        tempfile.TemporaryDirectory(prefix="cards-bench-live-") as tmp,
    ):
        customers = emulator.admin.seed(args.jobs, cards_per_customer=2)
        env = {
            "CELERY_BROKER_URL": redis_server.url(),
            "CELERY_RESULT_BACKEND": redis_server.url(),
            "STRIPE_API_KEY": API_KEY,
            "STRIPE_API_BASE": emulator.url,
        }
        app: Celery = client_app(redis_server.url())
        listener = ResultListener(redis_server.client(), PREFIX)
        log = Path(tmp)
        ours = start_worker(env, log / "ours.log", concurrency=None, name="ours")
        pool, size = pool_of(ours)
        prefork = start_worker(
            env, log / "prefork.log", concurrency=None, name="prefork", app_module="bench.baseline"
        )
        same = start_worker(
            env,
            log / "same.log",
            concurrency=size,
            name="same",
            app_module="bench.baseline",
            extra_args=("-P", pool, "-Q", "baseline-same"),
        )
        before = (
            start_worker(
                {**env, "CARDS_QUEUE": BEFORE_QUEUE},
                log / "before.log",
                name="before",
                tree=args.before,
            )
            if args.before
            else None
        )
        same_side = f"celery-{pool}"
        print(
            f"ours: celery -A worker worker ({pool}, {size}, "
            f"{len(nodes_of(ours.log, 'ours'))} processes); celery-prefork: "
            f"celery -A bench.baseline worker ({pool_of(prefork)[1]} processes); "
            f"{same_side}: -P {pool} -c {size}"
        )

        def send_ours(job_id: str, customer: dict[str, Any], card: int) -> None:
            enqueue_set_default_card(
                customer["id"], customer["cards"][card], job_id=job_id, app=app
            )

        def send_before(job_id: str, customer: dict[str, Any], card: int) -> None:
            job = build_job(customer["id"], customer["cards"][card], job_id=job_id).stamped()
            app.send_task(
                TASK_NAME,
                kwargs=job.to_task_kwargs(),
                task_id=job_id,
                queue=BEFORE_QUEUE,
                **event_reprs(job_id),
            )

        def send_baseline(queue: str) -> Send:
            def send(job_id: str, customer: dict[str, Any], card: int) -> None:
                kwargs = {"userId": customer["id"], "default_source": customer["cards"][card]}
                app.send_task(
                    "baseline.set_default_card", kwargs=kwargs, queue=queue, task_id=job_id
                )

            return send

        sides: list[tuple[str, CeleryWorker, Send]] = [
            ("ours", ours, send_ours),
            ("celery-prefork", prefork, send_baseline("baseline")),
            (same_side, same, send_baseline("baseline-same")),
        ]
        if before is not None:
            sides.insert(1, ("ours-before", before, send_before))
        writes = 0
        try:
            for latency in latencies:
                emulator.admin.configure(latency_ms=latency)
                rate = args.rate if latency > 0 else None
                for run in range(1, args.runs + 1):
                    for side, worker, send in sides:
                        slow = latency > 0 and side == "celery-prefork"
                        batch = customers[: args.slow_jobs] if slow else customers
                        writes += 1  # every pass writes the other card: a real change
                        runs.append(
                            measure(
                                side, worker, send, batch, writes % 2, rate, listener, latency, run
                            )
                        )
                        print(_row(runs[-1]), flush=True)
        finally:
            listener.close()
            for _side, worker, _send in sides:
                worker.stop()

    return report(runs, latencies, same_side, args.json)


def _row(r: Run) -> str:
    return (
        f"{r.latency_ms:>6g} {r.side:<15} {r.run:>3} {r.jobs:>6} {r.seconds:>8} "
        f"{r.jobs_per_second:>8} {r.p50_ms:>8} {r.p99_ms:>8} {r.cpu_s_per_1000:>10} "
        f"{r.rss_mb:>7} {r.ok:>6}"
    )


def report(runs: list[Run], latencies: list[float], same_side: str, as_json: bool) -> int:
    def median(side: str, latency: float, name: str) -> float:
        return float(
            statistics.median(
                getattr(r, name) for r in runs if r.side == side and r.latency_ms == latency
            )
        )

    print(
        f"{'ms':>6} {'side':<15} {'run':>3} {'jobs':>6} {'seconds':>8} {'jobs/s':>8} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'cpu-s/1000':>10} {'rss MB':>7} {'ok':>6}"
    )
    for r in runs:
        print(_row(r))
    summary: dict[str, Any] = {}
    met = True
    for latency in latencies:
        figures = {
            side: {
                name: median(side, latency, name)
                for name in ("jobs_per_second", "p50_ms", "p99_ms", "cpu_s_per_1000", "rss_mb")
            }
            for side in ("ours", "celery-prefork", same_side, "ours-before")
            if any(r.side == side for r in runs)
        }
        ours = figures["ours"]
        vs_prefork = ours["jobs_per_second"] / figures["celery-prefork"]["jobs_per_second"]
        vs_same = ours["jobs_per_second"] / figures[same_side]["jobs_per_second"]
        cpu_ok = ours["cpu_s_per_1000"] <= figures["celery-prefork"]["cpu_s_per_1000"]
        print(f"latency {latency:g} ms, medians:")
        for side, values in figures.items():
            print(
                f"  {side:<15} {values['jobs_per_second']:>8} jobs/s  p50 {values['p50_ms']} ms  "
                f"p99 {values['p99_ms']} ms  {values['cpu_s_per_1000']} CPU-s/1000  "
                f"RSS {values['rss_mb']} MB"
            )
        print(f"  ours / celery-prefork {vs_prefork:.2f}x, ours / {same_side} {vs_same:.2f}x")
        if "ours-before" in figures:
            print(
                f"  CPU-s per 1,000 jobs, ours / ours-before: "
                f"{ours['cpu_s_per_1000'] / figures['ours-before']['cpu_s_per_1000']:.2f}"
            )
        if latency > 0:
            bound = 2 * latency + 100
            goal = (
                ours["jobs_per_second"] >= GOAL_LIVE_JOBS_PER_SECOND
                and vs_prefork >= GOAL_LIVE_RATIO
                and ours["p99_ms"] <= bound
            )
            print(
                f"  goal (>= {GOAL_LIVE_JOBS_PER_SECOND:g} jobs/s, >= {GOAL_LIVE_RATIO:g}x "
                f"prefork, p99 <= {bound:g} ms): {'met' if goal else 'NOT met'}"
            )
        else:
            goal = vs_prefork >= GOAL_IDLE_RATIO
            print(f"  goal (>= {GOAL_IDLE_RATIO:g}x prefork): {'met' if goal else 'NOT met'}")
        print(f"  CPU-s per 1,000 jobs at most prefork's: {'met' if cpu_ok else 'NOT met'}")
        met = met and goal and cpu_ok
        summary[f"{latency:g}"] = {
            "figures": figures,
            "ours_vs_prefork": round(vs_prefork, 3),
            "ours_vs_same_pool": round(vs_same, 3),
        }
    print(f"live goals: {'met' if met else 'NOT met'}")
    if as_json:
        print(json.dumps({"runs": [asdict(r) for r in runs], "summary": summary}))
    failed = sum(r.jobs - r.ok for r in runs)
    if failed:
        print(f"error: {failed} jobs did not end with status true", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""P4: live-job latency alone and during a large migration, in the same run.

Goal (issue 3): live jobs at 5/s (emulator latency 50 ms); the p99 of their
enqueue→result latency during a 10,000-row migration is at most 1.5 x the p99
without one.

Deployment measured: dedicated live worker(s) on ``cards`` and dedicated bulk
worker(s) on ``cards.bulk`` (``celery -A worker worker -Q …``, prefork), one
private ``redis-server``, the Stripe emulator, all on this machine. The bulk
workers and the migration CLI can run at a lower CPU priority
(``--bulk-nice``), which is what we recommend in production when both kinds of
worker share hosts: the bulk side then takes only the CPU the live side leaves.

Each run (after a few uncounted warm-up jobs):

1. **alone, first half**: a paced sender enqueues live jobs
   (``producers.enqueue_set_default_card``, each for its own fresh customer) at
   ``--live-rate`` for half of ``--alone-seconds``;
2. **during**: the real ``cards migrate run FILE --quiet`` starts as a subprocess
   and the same sender runs until the CLI exits;
3. **alone, second half**: the sender again, with the bulk queue idle.

The alone phase brackets the migration because this machine is shared: other
load that comes and goes then weighs on both sides. The 1-minute load average
at the end of each phase is printed so that a contaminated run shows.

Latency = from just before the enqueue call to the moment the job's final
envelope is readable in the result backend. A listener thread subscribes to the
Redis result backend's per-job channel (Celery publishes the stored result on
``celery-task-meta-<id>`` in the same transaction as it stores it), so each
arrival is timed when it happens, without polling. Percentiles are
nearest-rank; the ratio is during/alone within the same run, and medians over
runs are reported.

Usage::

    python -m bench.p4_live_latency [--rows 10000] [--runs 3] [--alone-seconds 60] [--smoke]

Parameters:
    DEFAULT_ROWS: migration rows per run (the goal's size).
    DEFAULT_RUNS: runs; medians are reported.
    DEFAULT_ALONE_SECONDS: length of the alone phase (half before the migration, half after).
    DEFAULT_LIVE_RATE: live jobs per second.
    DEFAULT_LATENCY_MS: emulator latency per request.
    DEFAULT_BULK_BUDGET: the migration's shared budget (CARDS_RATE_LIMITS=cards.bulk=…):
        100/s makes 10,000 rows take about 100 s, a realistic share of a live-mode
        account and enough to load this machine.
    DEFAULT_LIVE_CONCURRENCY / DEFAULT_BULK_CONCURRENCY: prefork processes per worker;
        8 bulk slots keep 100 calls/s in flight at 50 ms each with room for overhead.
    DEFAULT_BULK_NICE: the bulk side's niceness (workers and the migration CLI). 19, not
        10: CPU shares are per process, and 8 bulk processes at nice 10 weigh as much as
        one live process at nice 0; at 19 they weigh about an eighth of one.
    DEFAULT_LIVE_NICE: the live worker's niceness (below 0 puts it ahead of the rest of
        the host as well, e.g. other services on a shared machine).
    GOAL_RATIO: p99 during / p99 alone must not exceed this.
    DRAIN_SECONDS: how long to wait for the last live results after a phase.
    WARMUP_SECONDS: live jobs sent before the alone phase and not counted.
    SLOWEST_SHOWN: the slowest live jobs of the during phase listed per run, with when
        they were sent (seconds after the migration started).
    SMOKE_*: the ``--smoke`` size, which only proves the benchmark runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import redis
from celery import Celery, states

from bench.migrations import stack
from bench.support import (
    finish_migrate,
    forget_rate_limits,
    machine_line,
    percentile,
    run_migrate,
    write_rows,
)
from harness.processes import BULK_POOL, CeleryWorker, start_worker
from producers import enqueue_set_default_card
from stripe_emulator.process import EmulatorProcess

LIVE_QUEUE: Final = "cards"
BULK_QUEUE: Final = "cards.bulk"
RESULT_PREFIX: Final = "celery-task-meta-"
DEFAULT_ROWS: Final = 10_000
DEFAULT_RUNS: Final = 3
DEFAULT_ALONE_SECONDS: Final = 60.0
DEFAULT_LIVE_RATE: Final = 5.0
DEFAULT_LATENCY_MS: Final = 50.0
DEFAULT_BULK_BUDGET: Final = 100.0
DEFAULT_LIVE_CONCURRENCY: Final = 2
DEFAULT_BULK_CONCURRENCY: Final = 8
DEFAULT_BULK_NICE: Final = 19
DEFAULT_LIVE_NICE: Final = 0
GOAL_RATIO: Final = 1.5
DRAIN_SECONDS: Final = 60.0
WARMUP_SECONDS: Final = 2.0
SLOWEST_SHOWN: Final = 5
SMOKE_ROWS: Final = 200
SMOKE_RUNS: Final = 1
SMOKE_ALONE_SECONDS: Final = 3.0
#: Seeded live customers beyond the expected need, so the sender never runs out.
LIVE_CUSTOMER_MARGIN: Final = 2.0


class ResultListener:
    """Times the arrival of live results from the result backend's pub/sub channels."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client  # held: a collected client closes its connections
        # redis-py leaves PubSub's constructor unannotated.
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        # A pattern on our own id prefix: the migration's results are not delivered here.
        self._pubsub.psubscribe(f"{RESULT_PREFIX}{prefix}*")
        self.arrived: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="p4-results", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.2)
            if message is None:
                continue
            now = time.monotonic()
            meta = json.loads(message["data"])
            if meta.get("status") not in states.READY_STATES:
                continue  # a retry's intermediate state, not the final envelope
            result = meta.get("result")
            ok = (
                meta["status"] == states.SUCCESS
                and isinstance(result, dict)
                and bool(result.get("status"))
            )
            job_id = str(message["channel"], "utf-8").removeprefix(RESULT_PREFIX)
            with self._lock:
                self.arrived.setdefault(job_id, (now, ok))

    def get(self, job_id: str) -> tuple[float, bool] | None:
        with self._lock:
            return self.arrived.get(job_id)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._pubsub.close()


@dataclass
class Phase:
    sent: dict[str, float] = field(default_factory=dict)
    customers: list[str] = field(default_factory=list)

    def emulator_ms(self, durations: dict[str, float]) -> list[float]:
        """The emulator's own time (ms) on this phase's updates: what Stripe's side adds."""
        return [durations[c] for c in self.customers if c in durations]

    def latencies(self, listener: ResultListener) -> tuple[list[float], int]:
        """Latencies (ms) of the jobs that ended well, and how many did not (or never came)."""
        values: list[float] = []
        bad = 0
        for job_id, sent_at in self.sent.items():
            got = listener.get(job_id)
            if got is None or not got[1]:
                bad += 1
            else:
                values.append((got[0] - sent_at) * 1000)
        return values, bad

    def slowest(self, listener: ResultListener, since: float, count: int) -> list[list[float]]:
        """The ``count`` slowest jobs as ``[seconds after since, latency ms]``: when they
        were sent says whether they bunch (the migration's start, its end) or spread."""
        timed = [
            [round(sent_at - since, 1), round((got[0] - sent_at) * 1000, 1)]
            for job_id, sent_at in self.sent.items()
            if (got := listener.get(job_id)) is not None
        ]
        return sorted(timed, key=lambda pair: pair[1])[-count:]


def send_paced(
    app: Celery,
    customers: list[dict[str, Any]],
    refill: Callable[[], list[dict[str, Any]]],
    prefix: str,
    rate: float,
    keep_going: Callable[[float], bool],
    phase: Phase,
) -> None:
    """Enqueue one live job every 1/rate s (on a fixed schedule, so a slow enqueue does not
    stretch the interval) while ``keep_going(elapsed)``."""
    started = time.monotonic()
    count = 0
    while keep_going(time.monotonic() - started):
        target = started + count / rate
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if not customers:
            customers.extend(refill())  # only if the migration ran far slower than expected
        customer = customers.pop()
        job_id = f"{prefix}{len(phase.sent)}"
        sent_at = time.monotonic()
        enqueue_set_default_card(customer["id"], customer["cards"][1], job_id=job_id, app=app)
        phase.sent[job_id] = sent_at
        phase.customers.append(customer["id"])
        count += 1


def for_seconds(limit: float) -> Callable[[float], bool]:
    """``keep_going`` for a phase of ``limit`` seconds."""
    return lambda elapsed: elapsed < limit


def migrating(process: subprocess.Popen[bytes]) -> Callable[[float], bool]:
    """``keep_going`` for the during phase: while the migration CLI runs."""
    return lambda _elapsed: process.poll() is None


def drain(phase: Phase, listener: ResultListener) -> None:
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline:
        if all(listener.get(job_id) is not None for job_id in phase.sent):
            return
        time.sleep(0.1)


@dataclass
class Run:
    alone_jobs: int
    alone_p50_ms: float
    alone_p99_ms: float
    alone_max_ms: float
    during_jobs: int
    during_p50_ms: float
    during_p99_ms: float
    during_max_ms: float
    ratio_p99: float
    failed_live: int
    migration_rows: int
    migration_done: int
    migration_seconds: float
    migration_rows_per_second: float
    during_slowest: list[list[float]]
    alone_emulator_p99_ms: float
    during_emulator_p99_ms: float
    alone_load: float
    during_load: float


def update_durations(emulator: EmulatorProcess) -> dict[str, float]:
    """Per customer, the emulator's time (ms) on its successful update, from the ledger."""
    events = emulator.admin.ledger()["events"]
    return {
        e["customer"]: (e["t_end"] - e["t_start"]) * 1000
        for e in events
        if e["status"] == 200 and e["customer"] is not None
    }


def renice(worker: CeleryWorker, niceness: int) -> None:
    """Lower the priority of a worker's whole process group (main process and pool);
    pool processes forked later inherit it from the main process."""
    if niceness:
        os.setpriority(os.PRIO_PGRP, worker.process.pid, niceness)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    parser.add_argument("--alone-seconds", type=float, default=DEFAULT_ALONE_SECONDS)
    parser.add_argument("--live-rate", type=float, default=DEFAULT_LIVE_RATE)
    parser.add_argument("--latency-ms", type=float, default=DEFAULT_LATENCY_MS)
    parser.add_argument("--bulk-budget", type=float, default=DEFAULT_BULK_BUDGET)
    parser.add_argument("--live-concurrency", type=int, default=DEFAULT_LIVE_CONCURRENCY)
    parser.add_argument("--bulk-concurrency", type=int, default=DEFAULT_BULK_CONCURRENCY)
    parser.add_argument(
        "--bulk-nice",
        type=int,
        default=DEFAULT_BULK_NICE,
        help="niceness of the bulk workers and the migration CLI (0: same priority as live)",
    )
    parser.add_argument(
        "--live-nice",
        type=int,
        default=DEFAULT_LIVE_NICE,
        help="niceness of the live worker (negative: ahead of everything else on the host)",
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny size that runs in seconds")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.runs, args.alone_seconds = SMOKE_ROWS, SMOKE_RUNS, SMOKE_ALONE_SECONDS

    print(machine_line(), flush=True)
    runs: list[Run] = []
    expected_seconds = args.alone_seconds + args.rows / args.bulk_budget
    live_per_run = int(args.live_rate * expected_seconds * LIVE_CUSTOMER_MARGIN) + 50
    with (
        tempfile.TemporaryDirectory(prefix="cards-bench-p4-") as tmp_name,
        stack(Path(tmp_name), latency_ms=args.latency_ms) as running,
    ):
        tmp, redis_server, emulator, app = (
            running.logs,
            running.redis,
            running.emulator,
            running.app,
        )
        env = {**running.env, "CARDS_RATE_LIMITS": f"{BULK_QUEUE}={args.bulk_budget:g}"}
        live = start_worker(
            env,
            tmp / "live.log",
            concurrency=args.live_concurrency,
            name="live",
            extra_args=("-Q", LIVE_QUEUE),
        )
        bulk = start_worker(
            env,
            tmp / "bulk.log",
            concurrency=args.bulk_concurrency,
            name="bulk",
            extra_args=("-Q", BULK_QUEUE, *BULK_POOL),
        )
        renice(bulk, args.bulk_nice)
        renice(live, args.live_nice)
        try:
            for index in range(args.runs):
                live_customers = emulator.admin.seed(live_per_run, cards_per_customer=2)

                def refill() -> list[dict[str, Any]]:
                    return emulator.admin.seed(live_per_run, cards_per_customer=2)

                bulk_customers = emulator.admin.seed(args.rows, cards_per_customer=2)
                rows_path = tmp / f"run{index + 1}.csv"
                write_rows(rows_path, bulk_customers, card_index=1)
                forget_rate_limits(redis_server.client())
                emulator.admin.reset()  # its ledger: this run's updates only
                prefix = f"p4live-{os.getpid()}-{index + 1}-"
                listener = ResultListener(redis_server.client(), prefix)
                try:
                    # Warm-up, not counted: the pool processes' first Stripe client and
                    # connections would otherwise land in the alone phase only.
                    send_paced(
                        app,
                        live_customers,
                        refill,
                        prefix + "w",
                        args.live_rate,
                        for_seconds(WARMUP_SECONDS),
                        Phase(),
                    )
                    # The alone phase brackets the migration, half before and half
                    # after: on a shared machine, load that drifts during a run then
                    # weighs on both sides instead of on one.
                    alone = Phase()
                    send_paced(
                        app,
                        live_customers,
                        refill,
                        prefix + "a",
                        args.live_rate,
                        for_seconds(args.alone_seconds / 2),
                        alone,
                    )
                    drain(alone, listener)
                    loads = [os.getloadavg()[0]]
                    cli_log = tmp / f"run{index + 1}.cli.log"
                    started = time.monotonic()
                    process = run_migrate(rows_path, env, cli_log)
                    if args.bulk_nice:
                        # The migration is background work as a whole: its producer too.
                        os.setpriority(os.PRIO_PROCESS, process.pid, args.bulk_nice)
                    during = Phase()
                    send_paced(
                        app,
                        live_customers,
                        refill,
                        prefix + "d",
                        args.live_rate,
                        migrating(process),
                        during,
                    )
                    cli = finish_migrate(process, started, cli_log)
                    drain(during, listener)
                    during_load = os.getloadavg()[0]
                    send_paced(
                        app,
                        live_customers,
                        refill,
                        prefix + "b",
                        args.live_rate,
                        for_seconds(args.alone_seconds / 2),
                        alone,
                    )
                    drain(alone, listener)
                    loads.append(os.getloadavg()[0])
                    a_values, a_bad = alone.latencies(listener)
                    d_values, d_bad = during.latencies(listener)
                    slowest = during.slowest(listener, started, SLOWEST_SHOWN)
                    durations = update_durations(emulator)
                finally:
                    listener.close()
                if cli.exit_code != 0:
                    print(cli.output[-3000:], file=sys.stderr)
                a_p99 = percentile(a_values, 0.99)
                d_p99 = percentile(d_values, 0.99)
                run = Run(
                    alone_jobs=len(alone.sent),
                    alone_p50_ms=round(percentile(a_values, 0.5), 1),
                    alone_p99_ms=round(a_p99, 1),
                    alone_max_ms=round(max(a_values, default=math.nan), 1),
                    during_jobs=len(during.sent),
                    during_p50_ms=round(percentile(d_values, 0.5), 1),
                    during_p99_ms=round(d_p99, 1),
                    during_max_ms=round(max(d_values, default=math.nan), 1),
                    ratio_p99=round(d_p99 / a_p99, 2),
                    failed_live=a_bad + d_bad,
                    migration_rows=args.rows,
                    migration_done=cli.done,
                    migration_seconds=round(cli.seconds, 1),
                    migration_rows_per_second=round(args.rows / cli.seconds, 1),
                    during_slowest=slowest,
                    alone_emulator_p99_ms=round(percentile(alone.emulator_ms(durations), 0.99), 1),
                    alone_load=round(statistics.mean(loads), 2),
                    during_load=round(during_load, 2),
                    during_emulator_p99_ms=round(
                        percentile(during.emulator_ms(durations), 0.99), 1
                    ),
                )
                runs.append(run)
                print(f"run {index + 1}: {json.dumps(asdict(run))}", flush=True)
        finally:
            live.stop()
            bulk.stop()

    def median(name: str) -> float:
        return float(statistics.median(getattr(r, name) for r in runs))

    print(
        f"deployment: live worker prefork -c {args.live_concurrency} -Q {LIVE_QUEUE} "
        f"(nice {args.live_nice}); "
        f"bulk worker prefork -c {args.bulk_concurrency} -Q {BULK_QUEUE} and the migration CLI "
        f"at nice {args.bulk_nice}; CARDS_RATE_LIMITS={BULK_QUEUE}={args.bulk_budget:g}; "
        f"emulator latency {args.latency_ms:g} ms; live {args.live_rate:g}/s, alone "
        f"{args.alone_seconds:g} s; {args.rows} rows per migration; {args.runs} runs"
    )
    print(
        f"{'run':>3} {'alone n':>7} {'p50 ms':>7} {'p99 ms':>7} {'during n':>8} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'ratio':>6} {'bulk rows/s':>11} {'failed':>6} "
        f"{'emu p99 alone/during':>20} {'load alone/during':>17}"
    )
    for i, r in enumerate(runs, start=1):
        print(
            f"{i:>3} {r.alone_jobs:>7} {r.alone_p50_ms:>7} {r.alone_p99_ms:>7} "
            f"{r.during_jobs:>8} {r.during_p50_ms:>7} {r.during_p99_ms:>7} {r.ratio_p99:>6} "
            f"{r.migration_rows_per_second:>11} {r.failed_live:>6} "
            f"{f'{r.alone_emulator_p99_ms}/{r.during_emulator_p99_ms}':>20} "
            f"{f'{r.alone_load}/{r.during_load}':>17}"
        )
    ratio = median("ratio_p99")
    print(
        f"medians: alone p50 {median('alone_p50_ms')} ms, p99 {median('alone_p99_ms')} ms; "
        f"during p50 {median('during_p50_ms')} ms, p99 {median('during_p99_ms')} ms; "
        f"ratio p99 during/alone {ratio:.2f} (goal <= {GOAL_RATIO}); migration "
        f"{median('migration_rows_per_second')} rows/s"
    )
    print(f"P4 goal {'MET' if ratio <= GOAL_RATIO else 'NOT MET'}")
    if args.json:
        print(json.dumps({"runs": [asdict(r) for r in runs], "ratio": ratio}))
    problems = [r for r in runs if r.failed_live or r.migration_done != r.migration_rows]
    if problems:
        print(f"error: {len(problems)} runs had failed live jobs or rows", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

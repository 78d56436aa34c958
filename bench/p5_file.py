"""P5: a 1,000,000-row migration file, validated and enqueued by the real ``cards migrate``.

Goals (issue 3, P5): ``cards migrate run FILE --validate-only`` at 100,000 rows/s or
more; the producer's peak RSS at most 150 MB when validating and when
enqueueing; Redis memory bounded by the window while enqueueing.

**Validate.** A generated CSV (``userId,default_source``, ``cus_`` + 14 and
``card_`` + 24 letters and digits, about 3% invalid rows of four kinds) is
checked by ``cards migrate run FILE --validate-only --quiet`` as a subprocess, once
untimed (so Python's bytecode cache is written, as an installed CLI has it),
then ``--runs`` times. rows/s is rows over the process's whole wall time, its
start-up included; peak RSS is ``wait4``'s ``ru_maxrss``.

**Enqueue.** ``cards migrate run FILE --quiet --window W`` runs against a private
``redis-server``, one bulk worker (``-Q <bulk queue>``) and the Stripe emulator
at 0 ms. The first ``--seed`` rows are seeded customers (their jobs succeed),
the rest are generated ids the emulator does not know (their jobs end "no such
customer": the same round trip). Every ``SAMPLE_SECONDS`` the producer's RSS,
Redis ``used_memory``, the key count, the bulk queue's length and the
migration's record are read; after ``--enqueue-seconds`` the producer is
stopped (SIGINT), unless ``--full`` lets it finish the file. Memory is
"bounded" if ``used_memory`` grows by at most ``BOUNDED_SLACK_BYTES`` from the
sample where a quarter of the run's rows had been sent to the end.

Usage::

    python -m bench.p5_file                # 1,000,000 rows, 3 runs, 60 s of enqueueing
    python -m bench.p5_file --full         # enqueue the whole file (slow)
    python -m bench.p5_file --smoke        # a few thousand rows: proves it runs

Parameters:
    GOAL_ROWS_PER_SECOND / GOAL_PEAK_RSS_MB: the P5 goals.
    DEFAULT_ROWS / DEFAULT_RUNS / DEFAULT_ENQUEUE_SECONDS / DEFAULT_SEED: the full run.
    SMOKE_*: the ``--smoke`` sizes (CI).
    INVALID_SHARE: rows of the validate file made invalid.
    SAMPLE_SECONDS: how often the enqueue phase reads memory and the queue.
    BOUNDED_SLACK_BYTES: Redis growth after the 25% mark still called bounded
        (allocator noise and the migration's own record: its finished-lines bitmap
        is one bit a line, 125 kB for a million).
    MIN_ROWS_TO_JUDGE: an enqueue run with fewer rows finished is not judged for growth.
    STOP_GRACE_SECONDS: how long a stopped producer may take to exit before SIGKILL.
    VALIDATE_TIMEOUT_SECONDS: a validate run that takes longer has failed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import redis

from bench.p5_measure import (
    Finished,
    generated_rows,
    key_groups,
    queued,
    redis_used_memory,
    rss_kib,
    run_to_end,
    write_rows,
)
from cards.settings import get_settings
from harness.processes import BIN, BULK_POOL, REPO_ROOT, run_redis, start_worker
from producers.migrate.store import MigrationStore
from stripe_emulator.process import run_emulator

GOAL_ROWS_PER_SECOND: Final = 100_000
GOAL_PEAK_RSS_MB: Final = 150
DEFAULT_ROWS: Final = 1_000_000
DEFAULT_RUNS: Final = 3
DEFAULT_ENQUEUE_SECONDS: Final = 60.0
DEFAULT_SEED: Final = 20_000
DEFAULT_WINDOW: Final = 500
SMOKE_ROWS: Final = 3_000
SMOKE_RUNS: Final = 1
SMOKE_ENQUEUE_SECONDS: Final = 6.0
SMOKE_SEED: Final = 200
SMOKE_WINDOW: Final = 50
INVALID_SHARE: Final = 0.03
SAMPLE_SECONDS: Final = 0.5
BOUNDED_SLACK_BYTES: Final = 2 * 1024 * 1024
#: Fewer rows finished than this say nothing about growth: not judged (the smoke run).
MIN_ROWS_TO_JUDGE: Final = 5_000
STOP_GRACE_SECONDS: Final = 15.0
VALIDATE_TIMEOUT_SECONDS: Final = 600.0
API_KEY: Final = "sk_test_bench_p5_0123456789"
MIGRATION_ID: Final = "p5bench"
MB: Final = 1_000_000


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    # An installed CLI has its bytecode compiled; without the cache every run pays
    # about a second recompiling its imports.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


# --- validate ----------------------------------------------------------------------------------


@dataclass
class ValidateFigures:
    rows: int
    runs: list[dict[str, float]]
    warmup_seconds: float
    median_rows_per_second: float
    median_seconds: float
    peak_rss_mb: float
    summary: str
    invalid_lines_printed: int


def validate(path: Path, rows: int, runs: int, scratch: Path) -> ValidateFigures:
    command = [str(BIN / "cards"), "migrate", "run", str(path), "--validate-only", "--quiet"]
    env = cli_env()

    def once() -> Finished:
        done = run_to_end(command, env, REPO_ROOT, scratch, VALIDATE_TIMEOUT_SECONDS)
        # Exit 1: some rows are invalid (as generated); anything else is a failure.
        if done.exit_code not in (0, 1) or f"{rows} rows" not in done.stdout:
            raise RuntimeError(f"validate run failed ({done.exit_code}): {done.stdout[-500:]}")
        return done

    warmup = once()
    timed = [once() for _ in range(runs)]
    per_run = [
        {
            "seconds": round(r.seconds, 3),
            "rows_per_second": round(rows / r.seconds),
            "peak_rss_mb": round(r.peak_rss_kib * 1024 / MB, 1),
        }
        for r in timed
    ]
    return ValidateFigures(
        rows=rows,
        runs=per_run,
        warmup_seconds=round(warmup.seconds, 3),
        median_rows_per_second=round(statistics.median(r["rows_per_second"] for r in per_run)),
        median_seconds=round(statistics.median(r["seconds"] for r in per_run), 3),
        peak_rss_mb=max(r["peak_rss_mb"] for r in per_run),
        summary=timed[-1].stdout.strip().splitlines()[-1],
        invalid_lines_printed=timed[-1].stderr_lines,
    )


# --- enqueue -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float
    producer_rss_mb: float
    used_memory: int
    keys: int
    queue_messages: int
    queue_rows: int
    sent_through: int
    finished: int


@dataclass
class EnqueueFigures:
    rows_in_file: int
    seeded: int
    window: int
    seconds: float
    stopped_early: bool
    producer_exit_code: int
    sent_through_line: int
    rows_finished: int
    done: int
    failed: int
    peak_rss_mb: float
    max_queue_rows: int
    max_queue_messages: int
    used_memory_start: int
    used_memory_at_25: int
    used_memory_max: int
    keys_start: int
    keys_max: int
    growth_after_25_bytes: int
    growth_per_row_finished_bytes: float
    verdict: str
    key_groups: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, float]] = field(default_factory=list)


def _sample(
    started: float, pid: int, client: redis.Redis, store: MigrationStore, queue: str
) -> Sample:
    record = store.get(MIGRATION_ID)
    messages, rows = queued(client, queue)
    return Sample(
        at=round(time.monotonic() - started, 2),
        producer_rss_mb=round(rss_kib(pid)[0] * 1024 / MB, 1),
        used_memory=redis_used_memory(client),
        keys=int(client.dbsize()),
        queue_messages=messages,
        queue_rows=rows,
        sent_through=record.sent_through if record else 0,
        finished=record.finished if record else 0,
    )


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # as Ctrl-C: the migration resumes later
        try:
            process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)


def _figures(
    samples: list[Sample], base: Sample, peak_kib: int, meta: dict[str, Any]
) -> EnqueueFigures:
    last = samples[-1] if samples else base
    # Progress is counted in finished rows (exact, from the record); at most a window
    # more are in flight, and sent_through is recorded before each chunk is sent.
    quarter = next((s for s in samples if s.finished >= last.finished / 4), last)
    used_max = max((s.used_memory for s in samples), default=base.used_memory)
    growth = used_max - quarter.used_memory
    return EnqueueFigures(
        seconds=round(last.at, 1),
        sent_through_line=last.sent_through,
        rows_finished=last.finished,
        peak_rss_mb=round(peak_kib * 1024 / MB, 1),
        max_queue_rows=max((s.queue_rows for s in samples), default=0),
        max_queue_messages=max((s.queue_messages for s in samples), default=0),
        used_memory_start=base.used_memory,
        used_memory_at_25=quarter.used_memory,
        used_memory_max=used_max,
        keys_start=base.keys,
        keys_max=max((s.keys for s in samples), default=base.keys),
        growth_after_25_bytes=growth,
        growth_per_row_finished_bytes=round(growth / max(last.finished - quarter.finished, 1), 1),
        verdict=(
            "too few rows to judge"
            if last.finished < MIN_ROWS_TO_JUDGE
            else "bounded"
            if growth <= BOUNDED_SLACK_BYTES
            else "grows with rows sent"
        ),
        samples=[asdict(s) for s in samples],
        **meta,
    )


def enqueue(
    rows: int, seed: int, window: int, seconds: float | None, concurrency: int, scratch: Path
) -> EnqueueFigures:
    queue = get_settings().bulk_queue
    with (
        run_redis() as server,
        run_emulator(api_key=API_KEY, latency_ms=0) as emulator,
    ):
        customers = emulator.admin.seed(seed, cards_per_customer=2) if seed else []
        fixed = [(c["id"], c["cards"][1]) for c in customers]
        path = scratch / "enqueue.csv"
        # All valid: an invalid row is never sent, and the goal is about what is sent.
        write_rows(path, generated_rows(rows, 0.0, seed=7, fixed=fixed))
        env = {
            "CELERY_BROKER_URL": server.url(),
            "CELERY_RESULT_BACKEND": server.url(),
            "STRIPE_API_KEY": API_KEY,
            "STRIPE_API_BASE": emulator.url,
        }
        worker = start_worker(
            env,
            scratch / "bulk-worker.log",
            concurrency=concurrency,
            name="p5bulk",
            extra_args=("-Q", queue, *BULK_POOL),
        )
        client = server.client()
        store = MigrationStore(client)
        base = _sample(time.monotonic(), os.getpid(), client, store, queue)
        command = [
            str(BIN / "cards"),
            "migrate",
            "run",
            str(path),
            "--quiet",
            "--window",
            str(window),
        ]
        command += ["--id", MIGRATION_ID, "--report", str(scratch / "enqueue.report.csv")]
        samples: list[Sample] = []
        peak_kib = 0
        with (scratch / "producer.log").open("wb") as log:
            started = time.monotonic()
            producer = subprocess.Popen(
                command, cwd=REPO_ROOT, env=cli_env(**env), stdout=log, stderr=subprocess.STDOUT
            )
        try:
            while producer.poll() is None:
                if seconds is not None and time.monotonic() - started >= seconds:
                    break
                time.sleep(SAMPLE_SECONDS)
                peak_kib = max(peak_kib, rss_kib(producer.pid)[1])
                samples.append(_sample(started, producer.pid, client, store, queue))
        finally:
            stopped_early = producer.poll() is None
            code = _stop(producer)
            worker.stop()
        record = store.get(MIGRATION_ID)
        meta = {
            "rows_in_file": rows,
            "seeded": len(fixed),
            "window": window,
            "stopped_early": stopped_early,
            "producer_exit_code": code,
            "done": record.done if record else 0,
            "failed": record.failed if record else 0,
            "key_groups": [asdict(g) for g in key_groups(client)],
        }
        return _figures(samples, base, peak_kib, meta)


# --- report ------------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "goal met" if ok else "GOAL MISSED"


def print_validate(figures: ValidateFigures) -> None:
    judged = figures.rows >= DEFAULT_ROWS
    print(f"validate-only, {figures.rows:,} rows: {figures.summary}")
    print(
        f"  untimed warm-up run {figures.warmup_seconds} s; "
        f"{figures.invalid_lines_printed:,} invalid lines printed on stderr each run"
    )
    for index, run in enumerate(figures.runs, start=1):
        print(
            f"  run {index}: {run['seconds']} s, {run['rows_per_second']:,} rows/s, "
            f"peak RSS {run['peak_rss_mb']} MB"
        )
    rate_ok = figures.median_rows_per_second >= GOAL_ROWS_PER_SECOND
    rss_ok = figures.peak_rss_mb <= GOAL_PEAK_RSS_MB
    print(
        f"  median {figures.median_rows_per_second:,} rows/s (start-up included): "
        + (
            f"{_verdict(rate_ok)} (>= {GOAL_ROWS_PER_SECOND:,})"
            if judged
            else f"not judged (the goal is for {DEFAULT_ROWS:,} rows; start-up dominates)"
        )
    )
    print(f"  peak RSS {figures.peak_rss_mb} MB: {_verdict(rss_ok)} (<= {GOAL_PEAK_RSS_MB} MB)")


def print_enqueue(figures: EnqueueFigures) -> None:
    scope = (
        f"covers {figures.rows_finished:,} rows finished in {figures.seconds} s "
        f"(producer stopped then), not the whole {figures.rows_in_file:,}-row file"
        if figures.stopped_early
        else f"covers the whole file: {figures.rows_finished:,} rows in {figures.seconds} s"
    )
    print(f"enqueue, window {figures.window}: {scope}")
    print(
        f"  {figures.done:,} done, {figures.failed:,} failed (the first {figures.seeded:,} rows "
        f"are seeded customers, the rest unknown to the emulator); sent through line "
        f"{figures.sent_through_line:,}; producer exit code {figures.producer_exit_code}"
    )
    rss_ok = figures.peak_rss_mb <= GOAL_PEAK_RSS_MB
    print(
        f"  producer peak RSS {figures.peak_rss_mb} MB: {_verdict(rss_ok)} "
        f"(<= {GOAL_PEAK_RSS_MB} MB)"
    )
    print(
        f"  bulk queue at most {figures.max_queue_rows:,} rows in "
        f"{figures.max_queue_messages:,} messages (window {figures.window}): "
        f"{_verdict(figures.max_queue_rows <= figures.window)}"
    )
    print(
        f"  Redis used_memory: start {figures.used_memory_start / MB:.2f} MB, at 25% of rows "
        f"finished {figures.used_memory_at_25 / MB:.2f} MB, max {figures.used_memory_max / MB:.2f} "
        f"MB; keys {figures.keys_start:,} -> at most {figures.keys_max:,}"
    )
    print(
        f"  growth after 25%: {figures.growth_after_25_bytes / MB:.2f} MB, "
        f"{figures.growth_per_row_finished_bytes} bytes per row finished: {figures.verdict} "
        f"(slack {BOUNDED_SLACK_BYTES / MB:.1f} MB)"
        + (
            ""
            if figures.verdict.startswith("too few")
            else f": {_verdict(figures.verdict == 'bounded')}"
        )
    )
    print("  Redis keys at the end, by kind (estimated from a sample):")
    for group in figures.key_groups:
        print(
            f"    {group['prefix']:<32} {group['keys']:>9,} keys, about {group['mean_bytes']:,} "
            f"bytes each, time to live {group['ttl_seconds']:,} s"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    parser.add_argument("--enqueue-seconds", type=float, default=DEFAULT_ENQUEUE_SECONDS)
    parser.add_argument("--full", action="store_true", help="enqueue the whole file")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="customers to seed")
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW)
    parser.add_argument("--concurrency", type=int, default=2, help="bulk worker processes")
    parser.add_argument("--skip-enqueue", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves it runs")
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    parser.add_argument("--keep", type=Path, help="keep the files and logs in this folder")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.runs, args.seed, args.window = (
            SMOKE_ROWS,
            SMOKE_RUNS,
            SMOKE_SEED,
            SMOKE_WINDOW,
        )
        args.enqueue_seconds = SMOKE_ENQUEUE_SECONDS
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"P5 benchmark: {os.cpu_count()} cores, load average {load}")
    with tempfile.TemporaryDirectory(prefix="cards-p5-") as tmp:
        scratch = Path(tmp) if args.keep is None else args.keep
        scratch.mkdir(parents=True, exist_ok=True)
        path = scratch / "validate.csv"
        started = time.monotonic()
        write_rows(path, generated_rows(args.rows, INVALID_SHARE, seed=5))
        print(
            f"generated {path.stat().st_size / MB:.1f} MB, {args.rows:,} rows "
            f"in {time.monotonic() - started:.1f} s"
        )
        checked = validate(path, args.rows, args.runs, scratch)
        print_validate(checked)
        path.unlink()
        sent = None
        if not args.skip_enqueue:
            seconds = None if args.full else args.enqueue_seconds
            sent = enqueue(
                args.rows,
                min(args.seed, args.rows),
                args.window,
                seconds,
                args.concurrency,
                scratch,
            )
            print_enqueue(sent)
    if args.json is not None:
        figures = {"validate": asdict(checked), "enqueue": asdict(sent) if sent else None}
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

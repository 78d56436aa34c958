"""P6: a 1,000,000-row migration through Stripe's Batch Jobs API (the batch-api engine).

Goals: our side (planning, the JSONL, upload, polling, download, mapping, settling,
report) at most 60 s for a million rows; the producer's peak RSS at most 150 MB;
every row reported; one applied write per customer in the emulator's ledger.

A private ``redis-server`` and the emulator (batch jobs at ``--lines-per-second``)
run; ``--rows`` rows are written, the first ``--duplicates`` of them an older row of
a customer that appears again later (so they end "superseded"). Then
``cards migrate run FILE --engine batch-api --quiet`` runs as a subprocess, its peak
RSS from ``wait4``. A side thread watches the batch job every 50 ms; Stripe's time
(from ``validating`` to the final status) is taken out of the wall time: what is
left is our side, the CLI's own polling delay included. The per-row engine's time
for the same rows at Stripe's 25 updates/s is printed beside it.

Usage::

    python -m bench.p6_batch              # 1,000,000 rows (about 5 minutes, mostly seeding)
    python -m bench.p6_batch --smoke      # 3,000 rows: proves it runs
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import httpx
import redis

from bench.p5_measure import Finished
from bench.support import machine_line
from harness.processes import BIN, REPO_ROOT, run_redis
from producers.migrate.store import MigrationStore
from stripe_emulator.process import EmulatorProcess, run_emulator

GOAL_OUR_SIDE_SECONDS: Final = 60.0
GOAL_PEAK_RSS_MB: Final = 150
#: Stripe's per-endpoint ceiling for customer updates, shared with live traffic.
PER_ROW_RATE: Final = 25
DEFAULT_ROWS: Final = 1_000_000
DEFAULT_DUPLICATES: Final = 50_000
SMOKE_ROWS: Final = 3_000
SMOKE_DUPLICATES: Final = 150
SEED_CHUNK: Final = 50_000
API_KEY: Final = "sk_test_p6_benchmark_0123456789"
WATCH_SECONDS: Final = 0.05
RUN_TIMEOUT_SECONDS: Final = 3600.0
LEDGER_TIMEOUT_SECONDS: Final = 600.0


@dataclass
class Figures:
    rows: int
    customers: int
    superseded_rows: int
    wall_seconds: float
    stripe_seconds: float
    our_side_seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    exit_code: int
    report_lines: int
    report_statuses: dict[str, int]
    lines_reported_once: bool
    customers_written_once: bool
    writes_applied_total: int
    per_row_projection_seconds: float
    batch_jobs: list[str]
    phases: dict[str, float]


class JobWatch(threading.Thread):
    """Watches the migration's batch jobs: when each began validating and ended."""

    def __init__(self, state: redis.Redis, emulator: EmulatorProcess) -> None:
        super().__init__(daemon=True)
        self._state, self._url = state, emulator.url
        self.spans: dict[str, list[float]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {API_KEY}"}) as http:
            while not self.stop.wait(WATCH_SECONDS):
                for job_id in self._running():
                    try:
                        status = http.get(
                            f"{self._url}/v2/core/batch_jobs/{job_id}",
                            headers={"Stripe-Version": "2026-09-30.preview"},
                        ).json()["status"]
                    except httpx.HTTPError:
                        continue  # a busy emulator: look again
                    span = self.spans.setdefault(job_id, [0.0, 0.0])
                    now = time.monotonic()
                    if status in ("validating", "in_progress") and not span[0]:
                        span[0] = now
                    if status not in ("ready_for_upload", "validating", "in_progress"):
                        span[1] = span[1] or now

    def _running(self) -> list[str]:
        found = [job for job, span in self.spans.items() if not span[1]]
        store = MigrationStore(self._state)
        for record in store.all():
            found += [job for job, _ in store.batch_jobs(record.id).values() if job not in found]
        return found

    def stripe_seconds(self) -> float:
        return sum(end - start for start, end in self.spans.values() if start and end)


class PeakRss(threading.Thread):
    """The CLI's peak RSS, from its own VmHWM (``wait4``'s ``ru_maxrss`` also counts the
    memory of this process, which the child was forked from before its ``exec``)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.kib = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(WATCH_SECONDS):
            for status in Path("/proc").glob("[0-9]*/status"):
                try:
                    text = status.read_text()
                    cmdline = (status.parent / "cmdline").read_bytes()
                except OSError:
                    continue
                if b"migrate\x00run" in cmdline and "VmHWM" in text:
                    hwm = int(text.split("VmHWM:", 1)[1].split()[0])
                    self.kib = max(self.kib, hwm)


#: Phases of the CLI's ``--quiet`` log: (name, the note that ends it).
PHASES: Final = (
    ("start-up and scan", "planning:"),
    ("plan and JSONL", ", uploading "),
    ("create and upload", " validating"),
    ("Stripe runs the job (with our polling delay)", " complete ("),
    ("download, map, settle, report", None),
)


def run_timed(command: list[str], env: dict[str, str]) -> tuple[Finished, dict[str, float]]:
    """Run the CLI, its stderr read as it comes: each phase's seconds, from its log lines."""
    started = time.monotonic()
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    marks: list[float] = []
    for raw in process.stderr:
        text = raw.decode(errors="replace")
        if len(marks) < len(PHASES) - 1:
            ending = PHASES[len(marks)][1]
            assert ending is not None
            if ending in text:
                marks.append(time.monotonic())
            elif ending == " validating" and " in_progress (" in text:
                marks.append(time.monotonic())  # validation too quick to be seen
    out = process.stdout.read().decode()
    _, status, usage = os.wait4(process.pid, 0)
    ended = time.monotonic()
    process.returncode = os.waitstatus_to_exitcode(status)
    edges = [started, *marks, ended]
    phases = {
        name: round(b - a, 2) for (name, _), a, b in zip(PHASES, edges, edges[1:], strict=False)
    }
    finished = Finished(
        process.returncode, ended - started, 0, out, 0, usage.ru_utime + usage.ru_stime
    )
    return finished, phases


def seed(emulator: EmulatorProcess, count: int) -> list[tuple[str, str, str]]:
    """``count`` customers with two cards: (customer, first card, second card)."""
    customers: list[tuple[str, str, str]] = []
    while len(customers) < count:
        chunk = emulator.admin.seed(min(SEED_CHUNK, count - len(customers)), cards_per_customer=2)
        customers.extend((c["id"], c["cards"][0], c["cards"][1]) for c in chunk)
    return customers


def write_file(path: Path, customers: list[tuple[str, str, str]], duplicates: int) -> int:
    """Older rows (first card) for the first ``duplicates`` customers, then every customer's
    newest row (second card)."""
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(("userId", "default_source"))
        writer.writerows((user, first) for user, first, _ in customers[:duplicates])
        writer.writerows((user, second) for user, _, second in customers)
    return duplicates + len(customers)


def check_report(path: Path, rows: int) -> tuple[int, Counter[str], bool]:
    lines: Counter[int] = Counter()
    statuses: Counter[str] = Counter()
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            lines[int(row["line"])] += 1
            statuses[row["status"]] += 1
    once = set(lines) == set(range(2, rows + 2)) and all(n == 1 for n in lines.values())
    return sum(lines.values()), statuses, once


def run(rows: int, duplicates: int, lines_per_second: float, scratch: Path) -> Figures:
    customers_count = rows - duplicates
    with (
        run_redis() as server,
        run_emulator(api_key=API_KEY, stop_timeout=30) as emulator,
    ):
        emulator.admin.configure(batch_lines_per_second=lines_per_second)
        print(f"seeding {customers_count:,} customers …", flush=True)
        customers = seed(emulator, customers_count)
        source = scratch / "p6.csv"
        write_file(source, customers, duplicates)
        print(f"file: {rows:,} rows, {source.stat().st_size / 1e6:.1f} MB", flush=True)
        url = server.url(0)
        env = {
            **os.environ,
            "CELERY_BROKER_URL": url,
            "CELERY_RESULT_BACKEND": url,
            "STRIPE_API_KEY": API_KEY,
            "STRIPE_API_BASE": emulator.url,
        }
        watch = JobWatch(redis.Redis.from_url(url), emulator)
        watch.start()
        # Untimed: Python writes the bytecode of the Stripe SDK, as an installed CLI has it.
        subprocess.run(
            [str(BIN / "python"), "-c", "import producers.migrate.batch_engine"], check=True
        )
        command = [str(BIN / "cards"), "migrate", "run", str(source), "--engine", "batch-api"]
        peak = PeakRss()
        peak.start()
        done, phases = run_timed([*command, "--quiet"], env)
        peak.stop.set()
        peak.join()
        watch.stop.set()
        watch.join()
        print(done.stdout.strip(), flush=True)
        # A million customers' counts: a big answer, from a busy emulator.
        ledger = emulator.admin.ledger(events=False, timeout=LEDGER_TIMEOUT_SECONDS)
    written = ledger["writes_applied_by_customer"]
    report_lines, statuses, once = check_report(Path(f"{source}.report.csv"), rows)
    stripe = watch.stripe_seconds()
    return Figures(
        rows=rows,
        customers=customers_count,
        superseded_rows=duplicates,
        wall_seconds=round(done.seconds, 2),
        stripe_seconds=round(stripe, 2),
        our_side_seconds=round(done.seconds - stripe, 2),
        cpu_seconds=round(done.cpu_seconds, 2),
        peak_rss_mb=round(peak.kib / 1024, 1),
        exit_code=done.exit_code,
        report_lines=report_lines,
        report_statuses=dict(statuses),
        lines_reported_once=once,
        customers_written_once=all(written.get(user) == 1 for user, _, _ in customers),
        writes_applied_total=int(ledger["writes_applied_total"]),
        per_row_projection_seconds=rows / PER_ROW_RATE,
        batch_jobs=list(watch.spans),
        phases=phases,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--duplicates", type=int, default=DEFAULT_DUPLICATES)
    parser.add_argument("--lines-per-second", type=float, default=1_000_000.0)
    parser.add_argument("--smoke", action="store_true", help="a few thousand rows")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    rows, duplicates = (
        (SMOKE_ROWS, SMOKE_DUPLICATES) if args.smoke else (args.rows, args.duplicates)
    )
    print(machine_line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="p6-") as scratch:
        figures = run(rows, duplicates, args.lines_per_second, Path(scratch))
    met_time = figures.our_side_seconds <= GOAL_OUR_SIDE_SECONDS
    met_rss = figures.peak_rss_mb <= GOAL_PEAK_RSS_MB
    correct = (
        figures.exit_code == 0
        and figures.lines_reported_once
        and figures.customers_written_once
        and figures.writes_applied_total == figures.customers
    )
    projection_h = figures.per_row_projection_seconds / 3600
    print(
        f"P6, {figures.rows:,} rows ({figures.superseded_rows:,} superseded), "
        f"{len(figures.batch_jobs)} batch job(s):\n"
        f"  wall {figures.wall_seconds:.1f} s, of which Stripe (emulator) ran the job "
        f"{figures.stripe_seconds:.1f} s\n"
        f"  our side {figures.our_side_seconds:.1f} s (goal <= {GOAL_OUR_SIDE_SECONDS:.0f}: "
        f"{'met' if met_time else 'NOT met'}), {figures.cpu_seconds:.1f} CPU-s; "
        f"peak RSS {figures.peak_rss_mb:.1f} MB "
        f"(goal <= {GOAL_PEAK_RSS_MB}: {'met' if met_rss else 'NOT met'})\n"
        f"  report: {figures.report_lines:,} lines {figures.report_statuses}, each line once: "
        f"{figures.lines_reported_once}; ledger: {figures.writes_applied_total:,} writes, one "
        f"per customer: {figures.customers_written_once} ({'correct' if correct else 'WRONG'})\n"
        f"  phases (s): {figures.phases}\n"
        f"  per-row engine at {PER_ROW_RATE}/s: {figures.per_row_projection_seconds:,.0f} s "
        f"({projection_h:.1f} h); our side is "
        f"{figures.per_row_projection_seconds / max(figures.our_side_seconds, 1e-9):,.0f}x less",
        flush=True,
    )
    if args.json:
        args.json.write_text(json.dumps(asdict(figures), indent=2))
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())

"""Run the chaos scenarios and write their figures to RELIABILITY.md.

    .venv/bin/python -m tests.chaos.run --full             # the issue's sizes (make chaos)
    .venv/bin/python -m tests.chaos.run                    # CI sizes
    .venv/bin/python -m tests.chaos.run --full --only R1,R3 --out /tmp/r.md
    .venv/bin/python -m tests.chaos.run --full --broker rabbitmq   # R1, R2, R5 on RabbitMQ

Exit code 1 if any scenario did not hold. Worker and Redis logs stay in the
printed directory.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from harness.processes import REPO_ROOT
from tests.chaos.scenarios import KNOWN_BUGS, RABBITMQ_SCENARIOS, SCENARIOS, Outcome, size_of

#: ``make chaos`` rewrites only what lies between these two lines of RELIABILITY.md.
RUN_BEGINS = "<!-- latest `make chaos` run: written by tests/chaos/run.py -->"
RUN_ENDS = "<!-- end of the latest `make chaos` run -->"
#: ``make chaos-rabbitmq`` has markers of its own, so each run keeps the other's figures.
RABBITMQ_RUN_BEGINS = "<!-- latest `make chaos-rabbitmq` run: written by tests/chaos/run.py -->"
RABBITMQ_RUN_ENDS = "<!-- end of the latest `make chaos-rabbitmq` run -->"

HEADER = """# Reliability

Figures from the chaos suite (`tests/chaos/`, issue 5 §2). Every scenario starts
its own `redis-server` (append-only file), its own Stripe emulator and real
`celery -A worker worker` processes, breaks something while a batch of jobs
runs, and is judged from outside: envelopes read from the result backend, Stripe
writes from the emulator's ledger, final state from the emulator's customers.
One customer per job, so "correct" means every customer ends on its job's card.

- **lost jobs**: jobs the producer sent that have no envelope at the end.
- **applied writes per job (max)**: writes the emulator applied (not replayed)
  under the job's idempotency keys, `cards-sdc:<job_id>` and every generation
  `cards-sdc:<job_id>:gN`, summed; the highest over all jobs. 1 is exactly once.
- **doubled writes**: jobs with more than one applied write, or whose customer
  saw more than one.
- **correct**: no lost job, no doubled write, every customer on its job's card,
  every envelope `status: true`, and the scenario's own checks (see the notes).

How each one runs (`tests/chaos/scenarios.py`; workers use a 5 s visibility
timeout, a 1 s unacked-restore interval and a 5 s customer lock, so that a dead
worker's jobs and locks come back quickly):

- **R1**: 3 workers (`-c 3`). Every 2 s a driver SIGKILLs the process group of
  one worker that is up (round robin) and boots its replacement in the
  background; it skips a tick rather than kill the last worker that is up. A
  boot takes 4-5 s on a 2-CPU machine, so kills land every ~3 s on average
  there (see the notes).
- **R2**: 2 workers; a producer thread sends at a steady rate through
  `producers.enqueue_set_default_card`. After a third of the jobs Redis gets
  SIGTERM, after two thirds SIGKILL, each time started again on the same port
  (`--appendonly yes --appendfsync always`). Workers and producer are left to
  reconnect by themselves.
- **R3**: the emulator's random faults on every customer update; workers with
  `CARDS_RETRY_MAX_ATTEMPTS=20`, 1 s backoff (2 s at most), 1 s Stripe timeout.
- **R4**: every job has a `callback_url` on a port where nothing listens; after
  the down time a receiver starts on that port. Each job needs a `delivered`
  record and a callback whose signature `producers.verify_callback` accepts
  and whose `webhook-id` is the job id.
- **R5**: 2 workers, a producer at a steady rate; every few seconds one worker
  gets SIGTERM (alternately its main process only, as `docker stop` and
  Kubernetes do, and its whole process group, as systemd does) while its
  replacement boots; the old one must finish and exit 0 by itself.
- **R6**: Redis Sentinel: a master, a replica and three sentinels
  (`redis-server --sentinel`, quorum 2, master down after 1 s), broker, result
  backend and job state all on `sentinel://` URLs; 2 workers, a producer at a
  steady rate. Halfway through, the master gets SIGKILL; the sentinels promote
  the replica and everything must follow by itself. Jobs the failover lost to
  asynchronous replication (sent, acknowledged, then nowhere) are counted
  (`lost_to_replication`) and sent again under the same job id, as a producer
  does with a job that has no result.

`make test` runs the same scenarios at CI size (`tests/chaos/test_chaos.py`,
marker `chaos`); `make chaos` runs the full sizes and rewrites the latest run
below (between its markers), keeping the rest of this file.
"""


def _machine() -> str:
    try:
        redis_version = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        ).stdout.split()[2]
    except (OSError, IndexError):
        redis_version = "?"
    return (
        f"{platform.node()}: {platform.system()} {platform.release()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, redis-server {redis_version}"
    )


def rabbitmq_version() -> str:
    """The machine's RabbitMQ server version, read from its package (no node asked)."""
    try:
        return next(Path("/usr/lib/rabbitmq/lib").glob("rabbitmq_server-*")).name.split("-", 1)[1]
    except (OSError, StopIteration):
        return "?"


def render(
    outcomes: list[Outcome],
    size: str,
    command: str,
    began: datetime,
    wall: float,
    broker: str = "redis",
) -> str:
    label = "full size (the issue's)" if size == "full" else "REDUCED (CI) size, not the full one"
    lines = [
        f"## Run: {label}",
        "",
        f"- command: `{command}`",
        f"- date: {began:%Y-%m-%d %H:%M} UTC, {wall:.0f} s in all",
        f"- machine: {_machine()}",
        *(
            [
                f"- broker: RabbitMQ {rabbitmq_version()}, a private node per scenario, quorum "
                "queues, publisher confirms; results, job state and locks in redis-server"
            ]
            if broker == "rabbitmq"
            else []
        ),
        "",
        "| id | scenario | size | duration | jobs | envelopes | applied writes per job (max) "
        "| lost jobs | doubled writes | correct |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.id} | {o.title} | {o.size} | {o.duration_s:.1f} s | {o.jobs} | {o.envelopes} "
            f"| {o.max_applied_per_job} | {len(o.lost)} | {len(o.doubled)} "
            f"| {'yes' if o.correct else 'NO'} |"
        )
    found = [
        (o.id, bug)
        for o in outcomes
        for bug in KNOWN_BUGS.get(o.id, ())
        if any(bug.signature in problem for problem in o.problems)
    ]
    if found:
        lines += ["", "### Bugs this run found (not fixed yet)", ""]
        lines += [f"- **{sid}**: {bug.explanation}" for sid, bug in found]
    lines += ["", "### Notes per scenario", ""]
    for o in outcomes:
        facts = ", ".join(f"{key} {value}" for key, value in o.facts.items())
        lines.append(f"- **{o.id}**: {facts}.")
        lines += [f"  - PROBLEM: {problem}" for problem in o.problems]
    return "\n".join(lines) + "\n"


def write_run(path: Path, run: str, markers: tuple[str, str] = (RUN_BEGINS, RUN_ENDS)) -> None:
    """Put ``run`` between the file's ``markers``, keeping everything around them (the
    hand-written explanations and earlier runs); a file without them gets the run
    appended (and the header first, when the file is new)."""
    begins, ends = markers
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{begins}\n\n{run}\n{ends}\n"
    if begins in text and ends in text:
        before, rest = text.split(begins, 1)
        after = rest.split(ends, 1)[1].lstrip("\n")
        path.write_text(before + block + ("\n" + after if after else ""), encoding="utf-8")
    else:
        path.write_text((text or HEADER) + "\n" + block, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the issue's sizes (default: CI)")
    parser.add_argument("--only", default="", help="comma-separated ids, e.g. R1,R3")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "RELIABILITY.md")
    parser.add_argument(
        "--broker",
        choices=("redis", "rabbitmq"),
        default="redis",
        help="rabbitmq: R1, R2 and R5 with a private RabbitMQ node as the broker",
    )
    args = parser.parse_args(argv)
    size = "full" if args.full else "ci"
    every = sorted(SCENARIOS) if args.broker == "redis" else list(RABBITMQ_SCENARIOS)
    ids = [i.strip() for i in args.only.split(",") if i.strip()] or every
    workdir = Path(tempfile.mkdtemp(prefix="cards-chaos-"))
    print(f"chaos ({size}): logs in {workdir}", flush=True)
    began = datetime.now(UTC)
    start = time.monotonic()
    outcomes = []
    for scenario in ids:
        outcome = SCENARIOS[scenario](workdir / scenario, **size_of(size, scenario, args.broker))
        print(outcome.summary(), flush=True)
        outcomes.append(outcome)
    command = " ".join([".venv/bin/python -m tests.chaos.run", *map(shlex.quote, sys.argv[1:])])
    target = "chaos" if args.broker == "redis" else "chaos-rabbitmq"
    if args.full and not args.only:
        command = f"make {target}  # = {command}"
    markers = (
        (RUN_BEGINS, RUN_ENDS)
        if args.broker == "redis"
        else (RABBITMQ_RUN_BEGINS, RABBITMQ_RUN_ENDS)
    )
    run = render(outcomes, size, command, began, time.monotonic() - start, args.broker)
    write_run(args.out, run, markers)
    print(f"wrote {args.out}")
    return 0 if all(o.correct for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Our worker on RabbitMQ (quorum queues) against our worker on Redis, in the same run.

Two figures, each as a ratio RabbitMQ / Redis measured in this run, runs
alternating between the brokers, medians reported:

- E2E (as ``bench.e2e``): N jobs enqueued through the producer API, every result
  awaited; prefork ``-c 2`` live worker on each broker.
- P1 (as ``bench.p1``): ``cards migrate`` of N rows through a bulk worker
  (prefork ``-c 2``) on each broker.

One private redis-server holds results and job state for both; RabbitMQ is a
private node (``harness.rabbitmq``), or the empty vhost ``--amqp-url`` names;
the Stripe emulator answers at 0 ms.

Usage::

    python -m bench.brokers [--jobs 1000] [--rows 2000] [--runs 3] [--smoke] [--json]
        [--amqp-url amqp://…/vhost]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from bench.e2e import Run, measure
from bench.migrations import Stack, median, run_migration, stack
from bench.support import machine_line, write_rows
from cards.settings import get_settings
from harness.processes import client_app, in_parallel, start_worker
from harness.rabbitmq import run_rabbit_node
from producers import enqueue_set_default_card

CONCURRENCY = 2
BROKERS = ("redis", "rabbitmq")


@contextmanager
def rabbitmq(base: Path, url: str | None) -> Iterator[str]:
    """The AMQP URL of the run: ``url`` when given, else a private node's under ``base``."""
    if url is not None:
        yield url
        return
    with run_rabbit_node(base) as node:
        yield node.url()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="E2E jobs per run")
    parser.add_argument("--rows", type=int, default=2000, help="P1 rows per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="end with the figures as JSON")
    parser.add_argument("--smoke", action="store_true", help="40 jobs, 100 rows, 1 run")
    parser.add_argument(
        "--amqp-url", help="an empty RabbitMQ vhost to use instead of starting a private node"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.jobs, args.rows, args.runs = 40, 100, 1
    bulk_queue = get_settings().bulk_queue

    with (
        tempfile.TemporaryDirectory(prefix="cards-brokers-") as tmp,
        stack(Path(tmp)) as on_redis,
        rabbitmq(Path(tmp) / "rabbitmq", args.amqp_url) as amqp_url,
    ):
        results = on_redis.redis.url()
        rabbit_env = {**on_redis.env, "CELERY_BROKER_URL": amqp_url}
        on_rabbit = Stack(
            on_redis.redis,
            on_redis.emulator,
            rabbit_env,
            client_app(amqp_url, results),
            Path(tmp),
        )
        stacks = {"redis": on_redis, "rabbitmq": on_rabbit}
        customers = on_redis.emulator.admin.seed(max(args.jobs, args.rows), cards_per_customer=2)

        e2e: list[Run] = []
        # Both brokers' workers boot (and later stop) side by side: seconds each.
        live = dict(
            zip(
                BROKERS,
                in_parallel(
                    [
                        partial(
                            start_worker,
                            stacks[broker].env,
                            Path(tmp) / f"e2e-{broker}.log",
                            concurrency=CONCURRENCY,
                            name=f"e2e-{broker}",
                            extra_args=("-P", "prefork"),
                        )
                        for broker in BROKERS
                    ]
                ),
                strict=True,
            )
        )
        try:
            for index in range(args.runs):
                for offset, broker in enumerate(BROKERS):
                    app = stacks[broker].app

                    def send(customer: dict[str, Any], run: int, app: Any = app) -> str:
                        card = customer["cards"][run % 2]
                        return enqueue_set_default_card(customer["id"], card, app=app)

                    picked = customers[: args.jobs]
                    e2e.append(measure(broker, live[broker], app, send, picked, 2 * index + offset))
        finally:
            in_parallel([worker.stop for worker in live.values()])

        p1: dict[str, list[float]] = {broker: [] for broker in BROKERS}
        bulk = dict(
            zip(
                BROKERS,
                in_parallel(
                    [
                        partial(
                            stacks[broker].worker,
                            f"p1-{broker}",
                            concurrency=CONCURRENCY,
                            queue=bulk_queue,
                        )
                        for broker in BROKERS
                    ]
                ),
                strict=True,
            )
        )
        try:
            for index in range(args.runs):
                for offset, broker in enumerate(BROKERS):
                    path = Path(tmp) / f"p1-{broker}-{index}.csv"
                    write_rows(path, customers[: args.rows], (2 * index + offset) % 2)
                    timed = run_migration(
                        path, f"p1-{broker}-{index}", stacks[broker], bulk[broker]
                    )
                    p1[broker].append(args.rows / timed.seconds)
        finally:
            in_parallel([worker.stop for worker in bulk.values()])

    failed = sum(r.jobs - r.ok for r in e2e)
    e2e_rate = {b: median([r.jobs_per_second for r in e2e if r.side == b]) for b in BROKERS}
    p1_rate = {b: median(p1[b]) for b in BROKERS}
    print(machine_line())
    print(
        f"brokers: {args.runs} runs alternating; E2E {args.jobs} jobs, P1 {args.rows} rows; "
        f"prefork -c {CONCURRENCY}; emulator latency 0 ms; RabbitMQ quorum queues with "
        "publisher confirms; results and job state in Redis for both"
    )
    print(f"{'figure':<6} {'broker':<9} {'median jobs/s':>14} {'runs':>30}")
    for figure, rates, per_run in (
        ("E2E", e2e_rate, {b: [r.jobs_per_second for r in e2e if r.side == b] for b in BROKERS}),
        ("P1", p1_rate, {b: [round(x, 1) for x in p1[b]] for b in BROKERS}),
    ):
        for broker in BROKERS:
            print(f"{figure:<6} {broker:<9} {rates[broker]:>14.1f} {per_run[broker]!s:>30}")
        print(f"{figure:<6} ratio RabbitMQ / Redis: {rates['rabbitmq'] / rates['redis']:.2f}")
    if args.json:
        ratios = {
            "e2e": e2e_rate["rabbitmq"] / e2e_rate["redis"],
            "p1": p1_rate["rabbitmq"] / p1_rate["redis"],
        }
        print(json.dumps({"e2e": e2e_rate, "p1": p1_rate, "ratio": ratios}))
    if failed:
        print(f"error: {failed} jobs did not end with status true", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

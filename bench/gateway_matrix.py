"""The gateway before and after, at every concurrency and latency: enqueue and wait.

One private ``redis-server`` and :mod:`bench.stand_in_worker` answering each job
``latency`` ms after taking it (an envelope with a customer from the emulator), so
that the gateway, not a worker, is what is measured. Three versions, each started
as its operator would: ``before`` (the tree at ``--before``, ``git archive``: one
process, waits polled), ``after-1`` (``cards gateway --workers 1``) and ``after``
(``cards gateway``: its default, one process per core), with their default settings
(in-flight cap included). For each: ``wait`` (``POST /api/cards/default?wait=10``)
at every ``--concurrency`` and ``--latencies`` value, and ``enqueue`` (no wait, on a
queue nobody reads) at every concurrency. A closed loop of clients as in
:mod:`bench.gateway` (a 503's ``Retry-After`` is honoured); each row: jobs/s (2xx
answers), p50/p95/p99 of those, gateway CPU per request, its RSS, the status mix.

Usage::

    python -m bench.gateway_matrix [--concurrency 10,50,200,500] [--latencies 0,200]
        [--requests 1500] [--before COMMIT] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

import httpx

from bench.gateway import (
    API_KEY,
    BEFORE_COMMIT,
    GATEWAY_KEY,
    STAND_IN_QUEUE,
    UNREAD_QUEUE,
    WAIT_SECONDS,
    Customers,
    Side,
    export_tree,
    measure,
    stand_in_worker,
)
from bench.support import machine_line
from cards.envelope import success
from harness.gateway_process import GatewayProcess, run_gateway
from harness.processes import REPO_ROOT, run_redis
from stripe_emulator.process import run_emulator

DEFAULT_CONCURRENCY: Final = "10,50,200,500"
DEFAULT_LATENCIES: Final = "0,200"
DEFAULT_REQUESTS: Final = 1500
SMOKE_CONCURRENCY: Final = "4,8"
SMOKE_LATENCIES: Final = "0,50"
SMOKE_REQUESTS: Final = 24
#: Each version: its name, whether it runs the ``--before`` tree (else this one), and its
#: ``--workers`` (None: none given, the command's default).
VERSIONS: Final = (("before", True, None), ("after-1", False, 1), ("after", False, None))


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def an_answer(emulator_url: str, customer: str) -> dict[str, Any]:
    """What a worker answers for ``customer``: the envelope of the customer with its
    sources, as the emulator has it."""
    response = httpx.get(
        f"{emulator_url}/v1/customers/{customer}",
        params={"expand[]": "sources"},
        auth=(API_KEY, ""),
        timeout=30,
    )
    response.raise_for_status()
    return dict(success(response.json()))


@contextmanager
def version(
    env: dict[str, str], logs: Path, name: str, tree: Path, workers: int | None
) -> Iterator[GatewayProcess]:
    log = logs / f"gateway-{name}-{env['CARDS_QUEUE']}.log"
    with run_gateway(env, log, workers=workers, tree=tree) as process:
        yield process


def _row(mode: str, latency: float | None, s: Side) -> str:
    shown = "-" if latency is None else f"{latency:g}"
    return (
        f"{s.name:<8} {mode:<8} {shown:>7} {s.concurrency:>6} {s.per_second:>8} "
        f"{s.p50_ms:>8} {s.p95_ms:>8} {s.p99_ms:>8} {s.cpu_ms_per_request:>7} "
        f"{s.rss_mb:>7}  {json.dumps(s.statuses)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--concurrency", default=DEFAULT_CONCURRENCY, help="comma-separated")
    parser.add_argument("--latencies", default=DEFAULT_LATENCIES, help="Stripe ms, comma-sep.")
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS, help="per row")
    parser.add_argument("--before", default=BEFORE_COMMIT, help="the before version's commit")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that proves it works")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = parser.parse_args(argv)
    if args.smoke:
        args.concurrency, args.latencies = SMOKE_CONCURRENCY, SMOKE_LATENCIES
        args.requests = SMOKE_REQUESTS
    concurrencies, latencies = _numbers(args.concurrency), _numbers(args.latencies)
    print(machine_line())
    print(
        f"{'version':<8} {'mode':<8} {'ms':>7} {'conc':>6} {'jobs/s':>8} {'p50':>8} "
        f"{'p95':>8} {'p99':>8} {'cpu ms':>7} {'rss MB':>7}  statuses"
    )
    rows: list[dict[str, Any]] = []
    with (
        run_redis() as redis_server,
        run_emulator(api_key=API_KEY) as emulator,
        tempfile.TemporaryDirectory(prefix="cards-bench-gateway-matrix-") as tmp,
    ):
        logs = Path(tmp)
        before = export_tree(args.before, logs / "before")
        seeded = emulator.admin.seed(
            max(args.requests, 2 * max(concurrencies)), cards_per_customer=2
        )
        customers = Customers(seeded)
        answer = an_answer(emulator.url, seeded[0]["id"])
        env = {
            "CELERY_BROKER_URL": redis_server.url(),
            "CELERY_RESULT_BACKEND": redis_server.url(),
            "CARDS_GATEWAY_API_KEYS": GATEWAY_KEY,
        }
        wait = f"/api/cards/default?wait={WAIT_SECONDS}"
        waiting = {**env, "CARDS_QUEUE": STAND_IN_QUEUE}
        for latency in latencies:
            with stand_in_worker(waiting, logs, latency, answer) as stand_in:
                parts = {"stand-in": stand_in.pid, "redis": redis_server.process.pid}
                for name, old, workers in VERSIONS:
                    tree = before if old else REPO_ROOT
                    with version(waiting, logs, name, tree, workers) as gateway:
                        for c in concurrencies:
                            side = measure(
                                name, gateway, wait, customers, args.requests, c, parts,
                                spread=latency / 1000,
                            )  # fmt: skip
                            print(_row("wait", latency, side), flush=True)
                            rows.append({"mode": "wait", "latency_ms": latency, **asdict(side)})
        for name, old, workers in VERSIONS:
            tree = before if old else REPO_ROOT
            with version({**env, "CARDS_QUEUE": UNREAD_QUEUE}, logs, name, tree, workers) as gw:
                for c in concurrencies:
                    path = "/api/cards/default"
                    side = measure(name, gw, path, customers, args.requests, c)
                    print(_row("enqueue", None, side), flush=True)
                    rows.append({"mode": "enqueue", "latency_ms": None, **asdict(side)})
    if args.json:
        print(json.dumps(rows))
    bad = [(r["name"], r["statuses"]) for r in rows if set(r["statuses"]) - {"200", "202", "503"}]
    if bad:
        print(f"error: unexpected statuses {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

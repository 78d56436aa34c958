"""The HTTP gateway under load: push against poll, CPU per 202, processes, overload.

One private ``redis-server``, the Stripe emulator at ``--latency`` ms, one real
``celery -A worker worker -P threads``, and ``cards gateway`` started as an
operator would (:mod:`harness.gateway_process`), a fresh one per side. A closed
loop of ``--concurrency`` clients sends ``POST /api/cards/default?wait=10``, each
for its own customer. Sides, all in one run: ``poll-1`` (``CARDS_GATEWAY_WAIT=poll``,
one process: the old way), ``push-1`` and ``push-2`` (``--workers 2``); for push-1,
the CPU per request of every part on the host (gateway, worker, Redis, emulator, this
client) and so the most any gateway could reach here. Then CPU per 202 (gateway CPU
from /proc / requests, no wait, on a queue no worker reads, so that the gateway has
the cores to itself), and an overload: four times the
in-flight cap (``--cap``) of waiting clients for ``--overload-seconds``: how fast
the 503s come back, and how long after the overload stops until ``/readyz`` is
200 and a waiting request succeeds again.

Usage::

    python -m bench.gateway [--requests 1500] [--concurrency 50] [--latency 200] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from bench.migrations import cpu_seconds
from bench.support import machine_line, percentile
from harness.gateway_process import GatewayProcess, run_gateway
from harness.processes import run_redis, start_worker
from stripe_emulator.process import run_emulator

API_KEY: Final = "sk_test_bench_0123456789"
GATEWAY_KEY: Final = "bench-gateway-key-0123456789"
AUTH: Final = {"Authorization": f"Bearer {GATEWAY_KEY}"}
DEFAULT_REQUESTS: Final = 1500
DEFAULT_CONCURRENCY: Final = 50
DEFAULT_LATENCY_MS: Final = 200.0
DEFAULT_CAP: Final = 32
DEFAULT_OVERLOAD_SECONDS: Final = 5.0
SMOKE_REQUESTS: Final = 40
SMOKE_CONCURRENCY: Final = 8
SMOKE_OVERLOAD_SECONDS: Final = 1.0
WORKER_THREADS: Final = 200
#: The 202 side's queue: no worker reads it, so its jobs do not share the cores.
UNREAD_QUEUE: Final = "bench-202-unread"
WAIT_SECONDS: Final = 10
#: The goals: p50 and p99 above the Stripe latency at most these; CPU per 202 at
#: most this; two processes with push at least this many times one polling process.
GOAL_P50_MS: Final = 20.0
GOAL_P99_MS: Final = 60.0
GOAL_CPU_MS_PER_202: Final = 1.0
GOAL_THROUGHPUT_RATIO: Final = 2.0
GOAL_RECOVERY_SECONDS: Final = 1.0
#: "Answers 503 quickly instead of queueing": a shed request's p99 at most this.
GOAL_SHED_P99_MS: Final = 100.0
#: How long an overload client waits after a 503 or a connection error (it does not
#: follow Retry-After, so as to keep the pressure on), and how long recovery may take.
BACKOFF_SECONDS: Final = 0.05
RECOVERY_DEADLINE_SECONDS: Final = 30.0
CLIENT_TIMEOUT_SECONDS: Final = 60


@dataclass
class Side:
    name: str
    requests: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float
    statuses: dict[str, int] = field(default_factory=dict)
    #: CPU ms per request of each part on the host, the gateway's included.
    parts_cpu_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class Overload:
    clients: int
    cap: int
    seconds: float
    shed: int
    served: int
    shed_p50_ms: float
    shed_p99_ms: float
    served_p50_ms: float
    served_p99_ms: float
    recovery_seconds: float
    statuses: dict[str, int] = field(default_factory=dict)


class Customers:
    """Each request gets a customer of its own, and each use of one writes its other card."""

    def __init__(self, customers: list[dict[str, Any]]) -> None:
        self._customers = customers
        self._next = 0

    def body(self) -> dict[str, str]:
        index = self._next
        self._next += 1
        customer = self._customers[index % len(self._customers)]
        card = customer["cards"][(index // len(self._customers)) % 2]
        return {"userId": customer["id"], "default_source": card}


def _count(statuses: dict[str, int], outcome: str) -> None:
    statuses[outcome] = statuses.get(outcome, 0) + 1


@asynccontextmanager
async def _session(url: str, connections: int) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for ``connections`` clients at once: aiohttp, whose CPU per request
    is a small fraction of the gateway's (httpx's is larger, see BENCHMARKS.md), so the
    gateway, not the load generator, sets the figures."""
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(
        url, connector=connector, headers=AUTH, timeout=timeout
    ) as http:
        yield http


async def _post(
    http: aiohttp.ClientSession, path: str, body: dict[str, str], statuses: dict[str, int]
) -> tuple[int, bool] | None:
    """POST ``body``; its status and whether it said ``Retry-After``, or None after a
    connection error. Either way the outcome is counted in ``statuses``: the status
    code, or the error's class name (a status class of its own, never a crash)."""
    try:
        async with http.post(path, json=body) as response:
            await response.read()
            answer = response.status, "Retry-After" in response.headers
    except (aiohttp.ClientError, TimeoutError) as exc:
        _count(statuses, type(exc).__name__)
        return None
    _count(statuses, str(answer[0]))
    return answer


async def _closed_loop(
    url: str, path: str, customers: Customers, requests: int, concurrency: int
) -> tuple[list[float], dict[str, int], float]:
    """``requests`` POSTs by ``concurrency`` clients; latencies (ms), statuses, seconds."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    left = requests
    async with _session(url, concurrency) as http:

        async def client() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                began = time.perf_counter()
                if await _post(http, path, customers.body(), statuses) is not None:
                    latencies.append((time.perf_counter() - began) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return latencies, statuses, time.perf_counter() - started


def _parts_cpu(pids: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds so far of each part (its process and direct children), and of this
    client process."""
    return {**{part: cpu_seconds(pid) for part, pid in pids.items()}, "client": time.process_time()}


def measure(
    name: str,
    gateway: GatewayProcess,
    path: str,
    customers: Customers,
    requests: int,
    c: int,
    parts: Mapping[str, int] | None = None,
) -> Side:
    """One side; with ``parts`` (name: pid), the CPU per request of each of them too."""
    asyncio.run(_closed_loop(gateway.url, path, customers, min(requests, 2 * c), c))  # warm up
    pids = {"gateway": gateway.process.pid, **(parts or {})}
    before = _parts_cpu(pids)
    latencies, statuses, seconds = asyncio.run(
        _closed_loop(gateway.url, path, customers, requests, c)
    )
    after = _parts_cpu(pids)
    cpu = after["gateway"] - before["gateway"]
    parts_cpu_ms = (
        {part: round((after[part] - before[part]) * 1000 / requests, 3) for part in after}
        if parts
        else {}
    )
    return Side(
        name=name,
        requests=requests,
        seconds=round(seconds, 3),
        per_second=round(requests / seconds, 1),
        p50_ms=round(percentile(latencies, 0.5), 1),
        p99_ms=round(percentile(latencies, 0.99), 1),
        cpu_ms_per_request=round(cpu * 1000 / requests, 3),
        statuses=statuses,
        parts_cpu_ms=parts_cpu_ms,
    )


async def _overload(
    url: str, customers: Customers, clients: int, cap: int, seconds: float
) -> Overload:
    shed: list[float] = []
    served: list[float] = []
    statuses: dict[str, int] = {}
    wait = f"/api/cards/default?wait={WAIT_SECONDS}"
    stop_at = time.perf_counter() + seconds
    async with _session(url, clients + 2) as http:

        async def client() -> None:
            while time.perf_counter() < stop_at:
                began = time.perf_counter()
                answer = await _post(http, wait, customers.body(), statuses)
                took = (time.perf_counter() - began) * 1000
                if answer is None or answer[0] == 503:
                    if answer is not None and answer[1]:
                        shed.append(took)
                    await asyncio.sleep(BACKOFF_SECONDS)
                elif answer[0] == 200:
                    served.append(took)

        await asyncio.gather(*(client() for _ in range(clients)))
        stopped = time.perf_counter()  # every overload client has had its answer
        recovered = await _recovery(http, customers, stopped)
    return Overload(
        clients=clients,
        cap=cap,
        seconds=seconds,
        shed=len(shed),
        served=len(served),
        shed_p50_ms=round(percentile(shed, 0.5), 2),
        shed_p99_ms=round(percentile(shed, 0.99), 2),
        served_p50_ms=round(percentile(served, 0.5), 1),
        served_p99_ms=round(percentile(served, 0.99), 1),
        recovery_seconds=round(recovered, 3),
        statuses=statuses,
    )


async def _recovery(http: aiohttp.ClientSession, customers: Customers, stopped: float) -> float:
    """Seconds from ``stopped`` until ``/readyz`` is 200 and a waiting request is answered
    200; RuntimeError if not within :data:`RECOVERY_DEADLINE_SECONDS`."""
    deadline = stopped + RECOVERY_DEADLINE_SECONDS
    ready = False
    probe: dict[str, int] = {}
    while time.perf_counter() < deadline:
        if not ready:
            try:
                async with http.get("/readyz") as response:
                    await response.read()
                    ready = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                pass
        else:
            wait = f"/api/cards/default?wait={WAIT_SECONDS}"
            answer = await _post(http, wait, customers.body(), probe)
            if answer is not None and answer[0] == 200:
                return time.perf_counter() - stopped
        await asyncio.sleep(0.01)
    raise RuntimeError(f"the gateway did not recover within {RECOVERY_DEADLINE_SECONDS} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--latency", type=float, default=DEFAULT_LATENCY_MS, help="Stripe ms")
    parser.add_argument("--cap", type=int, default=DEFAULT_CAP, help="in-flight cap, overload")
    parser.add_argument("--overload-seconds", type=float, default=DEFAULT_OVERLOAD_SECONDS)
    parser.add_argument("--smoke", action="store_true", help="a tiny run that proves it works")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    if args.smoke:
        args.requests, args.concurrency = SMOKE_REQUESTS, SMOKE_CONCURRENCY
        args.overload_seconds, args.cap = SMOKE_OVERLOAD_SECONDS, 4
    print(machine_line())
    with (
        run_redis() as redis_server,
        run_emulator(api_key=API_KEY) as emulator,
        tempfile.TemporaryDirectory(prefix="cards-bench-gateway-") as tmp,
    ):
        logs = Path(tmp)
        customers = Customers(
            emulator.admin.seed(max(args.requests, 4 * args.cap), cards_per_customer=2)
        )
        env = {
            "CELERY_BROKER_URL": redis_server.url(),
            "CELERY_RESULT_BACKEND": redis_server.url(),
            "STRIPE_API_KEY": API_KEY,
            "STRIPE_API_BASE": emulator.url,
            "CARDS_GATEWAY_API_KEYS": GATEWAY_KEY,
            "CARDS_GATEWAY_MAX_IN_FLIGHT": str(max(4 * args.concurrency, 256)),
        }
        worker = start_worker(
            env, logs / "worker.log", concurrency=WORKER_THREADS, extra_args=("-P", "threads")
        )
        try:
            emulator.admin.configure(latency_ms=args.latency)
            parts = {
                "worker": worker.process.pid,
                "redis": redis_server.process.pid,
                "emulator": emulator.popen.pid,
            }
            sides = run_sides(args, env, logs, customers, parts)
            overload = run_overload(args, env, logs, customers)
        finally:
            worker.stop()
    return report(sides, overload, args)


@contextmanager
def gateway(
    env: dict[str, str], logs: Path, name: str, workers: int, **more: str
) -> Iterator[GatewayProcess]:
    with run_gateway({**env, **more}, logs / f"gateway-{name}.log", workers=workers) as process:
        yield process


def run_sides(
    args: argparse.Namespace,
    env: dict[str, str],
    logs: Path,
    customers: Customers,
    parts: Mapping[str, int],
) -> list[Side]:
    """poll-1, push-1 (with every part's CPU), push-2, then 202s on a queue no one reads."""
    wait = f"/api/cards/default?wait={WAIT_SECONDS}"
    sides: list[Side] = []
    for name, workers, mode in (
        ("poll-1", 1, "poll"),
        ("push-1", 1, "push"),
        ("push-2", 2, "push"),
    ):
        with gateway(env, logs, name, workers, CARDS_GATEWAY_WAIT=mode) as process:
            split = parts if name == "push-1" else None
            side = measure(name, process, wait, customers, args.requests, args.concurrency, split)
            sides.append(side)
            print(_row(side), flush=True)
    with gateway(env, logs, "202", 1, CARDS_QUEUE=UNREAD_QUEUE) as process:
        side = measure(
            "202-push-1", process, "/api/cards/default", customers, args.requests, args.concurrency
        )
        sides.append(side)
        print(_row(side), flush=True)
    return sides


def run_overload(
    args: argparse.Namespace, env: dict[str, str], logs: Path, customers: Customers
) -> Overload:
    with gateway(env, logs, "overload", 1, CARDS_GATEWAY_MAX_IN_FLIGHT=str(args.cap)) as process:
        return asyncio.run(
            _overload(process.url, customers, 4 * args.cap, args.cap, args.overload_seconds)
        )


def _row(s: Side) -> str:
    return (
        f"{s.name:<11} {s.requests:>6} {s.seconds:>8} {s.per_second:>8} {s.p50_ms:>8} "
        f"{s.p99_ms:>8} {s.cpu_ms_per_request:>8}  {json.dumps(s.statuses)}"
    )


def gateway_cpu_budget(parts_cpu_ms: Mapping[str, float], cores: int, per_second: float) -> float:
    """CPU ms per request left to the gateway if this host is to serve ``per_second``
    waiting requests: every core busy, the other parts costing what they were measured
    to cost (negative: not even a gateway costing nothing could). Pure."""
    rest = sum(ms for part, ms in parts_cpu_ms.items() if part != "gateway")
    return cores * 1000 / per_second - rest


def _budget_line(push: Side, concurrency: int, latency_ms: float) -> str:
    """push-1's CPU per request by part, and what the wait goal leaves the gateway here."""
    cores = len(os.sched_getaffinity(0))
    # Little's law: a closed loop of ``concurrency`` clients waiting this long on average.
    needed = concurrency * 1000 / (latency_ms + GOAL_P50_MS)
    budget = gateway_cpu_budget(push.parts_cpu_ms, cores, needed)
    by_part = ", ".join(f"{part} {ms:.2f}" for part, ms in push.parts_cpu_ms.items())
    return (
        f"CPU ms per waiting request (push-1): {by_part}; a {latency_ms + GOAL_P50_MS:g} ms "
        f"wait at concurrency {concurrency} needs {needed:.0f} req/s, which leaves the "
        f"gateway {budget:.2f} ms per request on {cores} cores"
    )


def report(sides: list[Side], overload: Overload, args: argparse.Namespace) -> int:
    by = {s.name: s for s in sides}
    print(
        f"{'side':<11} {'reqs':>6} {'seconds':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'cpu ms':>8}"
    )
    for s in sides:
        print(_row(s))
    poll, push, two, accepted = by["poll-1"], by["push-1"], by["push-2"], by["202-push-1"]
    latency_ok = (
        push.p50_ms <= args.latency + GOAL_P50_MS and push.p99_ms <= args.latency + GOAL_P99_MS
    )
    ratio = two.per_second / poll.per_second
    cpu_ok = accepted.cpu_ms_per_request <= GOAL_CPU_MS_PER_202
    print(
        f"wait at concurrency {args.concurrency}, Stripe {args.latency:g} ms: "
        f"push p50 {push.p50_ms} / "
        f"p99 {push.p99_ms} ms, poll p50 {poll.p50_ms} / p99 {poll.p99_ms} ms "
        f"(poll/push p50 {poll.p50_ms / push.p50_ms:.2f}x); "
        f"goal p50 <= {args.latency + GOAL_P50_MS:g}, "
        f"p99 <= {args.latency + GOAL_P99_MS:g}: {'met' if latency_ok else 'NOT met'}"
    )
    print(_budget_line(push, args.concurrency, args.latency))
    print(
        f"waiting req/s: poll-1 {poll.per_second}, push-1 {push.per_second}, "
        f"push-2 {two.per_second}; "
        f"push-2 / poll-1 {ratio:.2f}x, push-2 / push-1 {two.per_second / push.per_second:.2f}x; "
        f"goal >= {GOAL_THROUGHPUT_RATIO:g}x: "
        f"{'met' if ratio >= GOAL_THROUGHPUT_RATIO else 'NOT met'}"
    )
    print(
        f"CPU per 202 (one process, its jobs left queued): {accepted.cpu_ms_per_request} ms; "
        f"goal <= "
        f"{GOAL_CPU_MS_PER_202:g} ms: {'met' if cpu_ok else 'NOT met'}"
    )
    recovered = overload.recovery_seconds < GOAL_RECOVERY_SECONDS
    quick = overload.shed_p99_ms <= GOAL_SHED_P99_MS
    errors = {k: n for k, n in overload.statuses.items() if not k.isdigit()}
    print(
        f"overload: {overload.clients} waiting clients on a cap of {overload.cap} for "
        f"{overload.seconds:g} s: {overload.shed} shed (503 p50 {overload.shed_p50_ms} / p99 "
        f"{overload.shed_p99_ms} ms), {overload.served} served (p50 {overload.served_p50_ms} / p99 "
        f"{overload.served_p99_ms} ms), answers {json.dumps(overload.statuses)}; "
        f"goal 503 p99 <= {GOAL_SHED_P99_MS:g} ms and no connection errors: "
        f"{'met' if quick and not errors else 'NOT met'}; ready again "
        f"{overload.recovery_seconds} s after it stopped; "
        f"goal < {GOAL_RECOVERY_SECONDS:g} s: {'met' if recovered else 'NOT met'}"
    )
    if args.json:
        print(json.dumps({"sides": [asdict(s) for s in sides], "overload": asdict(overload)}))
    bad = {s.name: s.statuses for s in sides if set(s.statuses) - {"200", "202"}}
    if set(overload.statuses) - {"200", "503"}:
        bad["overload"] = overload.statuses
    if bad:
        print(f"error: unexpected statuses {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

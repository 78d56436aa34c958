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
200 and a waiting request succeeds again. Last, the gateway alone: the worker
stopped and :mod:`bench.stand_in_worker` answering each job ``--latency`` ms after
taking it (a real answer's envelope), so that the gateway has the cores: push-1's
wait at ``--concurrency``, and at ``--alone-concurrency`` ``before-1`` (the gateway
before push waits: the tree at ``--before``, ``git archive``), poll-1, push-1, push-2.
Waiting clients start spread over one job's time: started together against a
steady job time they stay in step, and each round would be one burst.

Usage::

    python -m bench.gateway [--requests 1500] [--concurrency 50] [--latency 200]
        [--alone-concurrency 200] [--before COMMIT] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import aiohttp
import redis
from celery.backends.base import KeyValueStoreBackend

from bench.migrations import cpu_seconds, rss_bytes
from bench.support import machine_line, percentile
from harness.gateway_process import GatewayProcess, run_gateway
from harness.processes import BIN, REPO_ROOT, run_redis, start_worker, wait_for
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
#: The alone sides' queue, read only by the stand-in worker (bench.stand_in_worker).
STAND_IN_QUEUE: Final = "bench-stand-in"
#: Clients of the alone capacity sides: enough to fill two gateway processes.
DEFAULT_ALONE_CONCURRENCY: Final = 200
SMOKE_ALONE_CONCURRENCY: Final = 16
#: The tree before push waits, processes and load shedding: the gateway whose waiting
#: requests/s the throughput goal doubles (``before-1``: one process, polling).
BEFORE_COMMIT: Final = "1b0b378018d9dcf64eb17672ec54ff12a3c1422e"
STAND_IN_START_SECONDS: Final = 60
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
    concurrency: int
    seconds: float
    #: Answers that took the job (2xx) per second.
    per_second: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float
    statuses: dict[str, int] = field(default_factory=dict)
    p95_ms: float = math.nan
    #: The gateway's resident memory (its processes together) at the side's end.
    rss_mb: float = math.nan
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
    #: A 503's time inside the gateway (its access log's ``ms``): without the host's
    #: CPU queue and the load generator's own event loop, which the client's figures hold.
    shed_in_gateway_p50_ms: float = math.nan
    shed_in_gateway_p99_ms: float = math.nan


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
) -> tuple[int, float | None] | None:
    """POST ``body``; its status and its ``Retry-After`` seconds (None if it said none),
    or None after a connection error. Either way the outcome is counted in ``statuses``:
    the status code, or the error's class name (a status class of its own, never a crash)."""
    try:
        async with http.post(path, json=body) as response:
            await response.read()
            retry_after = response.headers.get("Retry-After")
            answer = response.status, None if retry_after is None else float(retry_after)
    except (aiohttp.ClientError, TimeoutError) as exc:
        _count(statuses, type(exc).__name__)
        return None
    _count(statuses, str(answer[0]))
    return answer


async def _closed_loop(
    url: str, path: str, customers: Customers, requests: int, concurrency: int, spread: float = 0
) -> tuple[list[float], dict[str, int], float]:
    """``requests`` POSTs by ``concurrency`` clients; the latencies (ms) of the answers
    that took the job (2xx), every outcome's count, seconds. A client told to retry
    later (503 with ``Retry-After``) waits that long, as a well-behaved caller would.

    Client k starts ``k * spread / concurrency`` seconds in: clients that all start at
    once against a job time that hardly varies stay in step, every round a burst."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    left = requests
    async with _session(url, concurrency) as http:

        async def client(k: int) -> None:
            nonlocal left
            await asyncio.sleep(k * spread / concurrency)
            while left > 0:
                left -= 1
                began = time.perf_counter()
                answer = await _post(http, path, customers.body(), statuses)
                if answer is not None and 200 <= answer[0] < 300:
                    latencies.append((time.perf_counter() - began) * 1000)
                elif answer is not None and answer[1] is not None:
                    await asyncio.sleep(answer[1])

        started = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(concurrency)))
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
    spread: float = 0,
) -> Side:
    """One side; with ``parts`` (name: pid), the CPU per request of each of them too.
    ``spread``: the clients' starts spread over this many seconds (:func:`_closed_loop`)."""
    warm_up = min(requests, 2 * c)
    asyncio.run(_closed_loop(gateway.url, path, customers, warm_up, c, spread))
    pids = {"gateway": gateway.process.pid, **(parts or {})}
    before = _parts_cpu(pids)
    latencies, statuses, seconds = asyncio.run(
        _closed_loop(gateway.url, path, customers, requests, c, spread)
    )
    after = _parts_cpu(pids)
    rss = rss_bytes(gateway.process.pid)
    cpu = after["gateway"] - before["gateway"]
    parts_cpu_ms = (
        {part: round((after[part] - before[part]) * 1000 / requests, 3) for part in after}
        if parts
        else {}
    )
    return Side(
        name=name,
        requests=requests,
        concurrency=c,
        seconds=round(seconds, 3),
        per_second=round(len(latencies) / seconds, 1),
        p50_ms=round(percentile(latencies, 0.5), 1),
        p99_ms=round(percentile(latencies, 0.99), 1),
        cpu_ms_per_request=round(cpu * 1000 / requests, 3),
        statuses=statuses,
        parts_cpu_ms=parts_cpu_ms,
        p95_ms=round(percentile(latencies, 0.95), 1),
        rss_mb=round(rss / 2**20, 1),
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
                    if answer is not None and answer[1] is not None:
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
    parser.add_argument(
        "--alone-concurrency",
        type=int,
        default=DEFAULT_ALONE_CONCURRENCY,
        help="clients of the alone capacity sides",
    )
    parser.add_argument(
        "--before",
        default=BEFORE_COMMIT,
        help="the commit of the before-1 side (git archive); '' leaves the side out",
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny run that proves it works")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    if args.smoke:
        args.requests, args.concurrency = SMOKE_REQUESTS, SMOKE_CONCURRENCY
        args.overload_seconds, args.cap = SMOKE_OVERLOAD_SECONDS, 4
        args.alone_concurrency = SMOKE_ALONE_CONCURRENCY
    print(machine_line())
    with (
        run_redis() as redis_server,
        run_emulator(api_key=API_KEY) as emulator,
        tempfile.TemporaryDirectory(prefix="cards-bench-gateway-") as tmp,
    ):
        logs = Path(tmp)
        before = export_tree(args.before, logs / "before") if args.before else None
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
        answer = a_real_answer(redis_server.url())
        alone = run_alone_sides(
            args, env, logs, customers, answer, redis_server.process.pid, before
        )
    return report(sides, overload, alone, args)


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
    spread = args.latency / 1000  # one job's time: clients out of step, as users are
    sides: list[Side] = []
    for name, workers, mode in (
        ("poll-1", 1, "poll"),
        ("push-1", 1, "push"),
        ("push-2", 2, "push"),
    ):
        with gateway(env, logs, name, workers, CARDS_GATEWAY_WAIT=mode) as process:
            split = parts if name == "push-1" else None
            side = measure(
                name, process, wait, customers, args.requests, args.concurrency, split, spread
            )
            sides.append(side)
            print(_row(side), flush=True)
    with gateway(env, logs, "202", 1, CARDS_QUEUE=UNREAD_QUEUE) as process:
        side = measure(
            "202-push-1", process, "/api/cards/default", customers, args.requests, args.concurrency
        )
        sides.append(side)
        print(_row(side), flush=True)
    return sides


def export_tree(commit: str, into: Path) -> Path:
    """``commit``'s source tree (``git archive``), extracted into ``into``."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "archive", commit], capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        why = (getattr(exc, "stderr", b"") or b"").decode(errors="replace").strip() or exc
        raise SystemExit(
            f"error: git archive {commit} failed ({why}); run from a git checkout that "
            "has it, or pass --before '' to leave before-1 out"
        ) from None
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def a_real_answer(redis_url: str) -> dict[str, Any]:
    """The envelope of one job the real worker answered in this run (the stand-in's
    answers are the same size as real ones)."""
    client = redis.Redis.from_url(redis_url)
    pattern = f"{KeyValueStoreBackend.task_keyprefix}*"
    for key in client.scan_iter(match=pattern, count=100):
        value = client.get(key)
        if value is not None:
            meta = json.loads(value)
            if meta.get("status") == "SUCCESS" and meta["result"].get("status") is True:
                return dict(meta["result"])
    raise RuntimeError("no job of the real worker's sides has a successful answer")


@contextmanager
def stand_in_worker(
    env: Mapping[str, str], logs: Path, latency_ms: float, answer: dict[str, Any]
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m bench.stand_in_worker`` on :data:`STAND_IN_QUEUE`, once it is ready."""
    answer_path = logs / "stand-in-answer.json"
    answer_path.write_text(json.dumps(answer))
    log_path = logs / "stand-in.log"
    command = [str(BIN / "python"), "-m", "bench.stand_in_worker", "--queue", STAND_IN_QUEUE]
    command += ["--latency", str(latency_ms), "--answer", str(answer_path)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env={**os.environ, **env}, stdout=log, stderr=log
        )

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the stand-in worker exited:\n{log_path.read_text()[-3000:]}")
        return b"ready" in log_path.read_bytes()

    try:
        wait_for(ready, STAND_IN_START_SECONDS, "the stand-in worker")
        yield process
    finally:
        process.terminate()
        process.wait()


def run_alone_sides(
    args: argparse.Namespace,
    env: dict[str, str],
    logs: Path,
    customers: Customers,
    answer: dict[str, Any],
    redis_pid: int,
    before: Path | None,
) -> list[Side]:
    """The gateway with the host to itself: the real worker stopped, the stand-in
    answering each job ``--latency`` ms after taking it. push-1 at ``--concurrency``
    (the wait goal), then at ``--alone-concurrency`` (what each can serve): before-1
    (``before``'s tree, if given), poll-1, push-1 and push-2."""
    wait = f"/api/cards/default?wait={WAIT_SECONDS}"
    many = args.alone_concurrency
    alone = {
        **env,
        "CARDS_QUEUE": STAND_IN_QUEUE,
        "CARDS_GATEWAY_MAX_IN_FLIGHT": str(max(4 * many, 256)),
    }
    spread = args.latency / 1000
    sides: list[Side] = []
    with stand_in_worker(alone, logs, args.latency, answer) as stand_in:
        parts = {"stand-in": stand_in.pid, "redis": redis_pid}
        if before is not None:
            log = logs / f"gateway-before-1-c{many}.log"
            # Its own command as it was: no --workers, no wait mode (it polls).
            with run_gateway(alone, log, workers=None, tree=before) as gw:
                side = measure(
                    "before-1", gw, wait, customers, 2 * args.requests, many, parts, spread
                )
                sides.append(side)
                print(_row(side), flush=True)
        for name, workers, mode, clients, requests in (
            ("alone-push-1", 1, "push", args.concurrency, args.requests),
            ("alone-poll-1", 1, "poll", many, 2 * args.requests),
            ("alone-push-1", 1, "push", many, 2 * args.requests),
            ("alone-push-2", 2, "push", many, 2 * args.requests),
        ):
            with gateway(alone, logs, f"{name}-c{clients}", workers, CARDS_GATEWAY_WAIT=mode) as gw:
                side = measure(name, gw, wait, customers, requests, clients, parts, spread)
                sides.append(side)
                print(_row(side), flush=True)
    return sides


def run_overload(
    args: argparse.Namespace, env: dict[str, str], logs: Path, customers: Customers
) -> Overload:
    with gateway(env, logs, "overload", 1, CARDS_GATEWAY_MAX_IN_FLIGHT=str(args.cap)) as process:
        overload = asyncio.run(
            _overload(process.url, customers, 4 * args.cap, args.cap, args.overload_seconds)
        )
    inside = shed_in_gateway_ms(process.log)  # stopped: every line written
    return replace(
        overload,
        shed_in_gateway_p50_ms=percentile(inside, 0.5),
        shed_in_gateway_p99_ms=percentile(inside, 0.99),
    )


def shed_in_gateway_ms(log: str) -> list[float]:
    """The gateway's own time (``ms``) of each 503 in its JSON access lines. Pure."""
    times: list[float] = []
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("status") == 503 and "ms" in entry:
            times.append(float(entry["ms"]))
    return times


def _row(s: Side) -> str:
    return (
        f"{s.name:<12} {s.concurrency:>7} {s.requests:>6} {s.seconds:>8} {s.per_second:>8} "
        f"{s.p50_ms:>8} "
        f"{s.p99_ms:>8} {s.cpu_ms_per_request:>8}  {json.dumps(s.statuses)}"
    )


def gateway_cpu_budget(parts_cpu_ms: Mapping[str, float], cores: int, per_second: float) -> float:
    """CPU ms per request left to the gateway if this host is to serve ``per_second``
    waiting requests: every core busy, the other parts costing what they were measured
    to cost (negative: not even a gateway costing nothing could). Pure."""
    rest = sum(ms for part, ms in parts_cpu_ms.items() if part != "gateway")
    return cores * 1000 / per_second - rest


def closed_loop_ceiling(concurrency: int, wait_ms: float) -> float:
    """Requests a second that ``concurrency`` clients, each waiting ``wait_ms`` for its
    answer before sending the next, can send at most (Little's law). Pure."""
    return concurrency * 1000 / wait_ms


def _budget_line(push: Side, concurrency: int, latency_ms: float) -> str:
    """push-1's CPU per request by part, and what the wait goal leaves the gateway here."""
    cores = len(os.sched_getaffinity(0))
    needed = closed_loop_ceiling(concurrency, latency_ms + GOAL_P50_MS)
    budget = gateway_cpu_budget(push.parts_cpu_ms, cores, needed)
    by_part = ", ".join(f"{part} {ms:.2f}" for part, ms in push.parts_cpu_ms.items())
    return (
        f"CPU ms per waiting request (push-1): {by_part}; a {latency_ms + GOAL_P50_MS:g} ms "
        f"wait at concurrency {concurrency} needs {needed:.0f} req/s, which leaves the "
        f"gateway {budget:.2f} ms per request on {cores} cores"
    )


def _wait_goal(side: Side, latency_ms: float) -> str:
    """``met`` if ``side``'s p50 and p99 are within the wait goal's margins over Stripe's
    latency, else ``NOT met``. Pure."""
    met = side.p50_ms <= latency_ms + GOAL_P50_MS and side.p99_ms <= latency_ms + GOAL_P99_MS
    return "met" if met else "NOT met"


def capacity_verdict(baseline_per_second: float, ratio: float, ceiling: float) -> str:
    """The capacity goal's verdict on push-2 / baseline. Not judged where the clients,
    answered within the wait goal, would send less than the goal's rate (``ceiling``):
    there the ratio shows how long each waited, not what the gateway can serve. Pure."""
    wanted = GOAL_THROUGHPUT_RATIO * baseline_per_second
    if wanted > ceiling:
        return (
            f"goal >= {GOAL_THROUGHPUT_RATIO:g}x not judged here: {wanted:.0f} req/s is more "
            f"than these clients send when answered within the wait goal, {ceiling:.0f}"
        )
    met = ratio >= GOAL_THROUGHPUT_RATIO
    return f"goal >= {GOAL_THROUGHPUT_RATIO:g}x: {'met' if met else 'NOT met'}"


def _capacity_line(
    label: str, baseline: Side, poll: Side, push: Side, two: Side, latency_ms: float
) -> str:
    """Each side's waiting req/s; push-2 against ``baseline``, held to the goal."""
    ratio = two.per_second / baseline.per_second
    before = f"before-1 {baseline.per_second}, " if baseline is not poll else ""
    ceiling = closed_loop_ceiling(two.concurrency, latency_ms + GOAL_P50_MS)
    return (
        f"{label}: {before}poll-1 {poll.per_second}, push-1 {push.per_second}, "
        f"push-2 {two.per_second}; push-2 / {baseline.name} {ratio:.2f}x "
        f"({capacity_verdict(baseline.per_second, ratio, ceiling)}), "
        + (f"push-2 / poll-1 {two.per_second / poll.per_second:.2f}x, " if before else "")
        + f"push-2 / push-1 {two.per_second / push.per_second:.2f}x"
    )


def report(
    sides: list[Side], overload: Overload, alone: list[Side], args: argparse.Namespace
) -> int:
    by = {s.name: s for s in sides}
    alone_by = {(s.name, s.concurrency): s for s in alone}
    print(
        f"{'side':<12} {'clients':>7} {'reqs':>6} {'seconds':>8} {'req/s':>8} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'cpu ms':>8}"
    )
    for s in [*sides, *alone]:
        print(_row(s))
    poll, push, two, accepted = by["poll-1"], by["push-1"], by["push-2"], by["202-push-1"]
    cpu_ok = accepted.cpu_ms_per_request <= GOAL_CPU_MS_PER_202
    print(
        f"wait at concurrency {args.concurrency}, Stripe {args.latency:g} ms, with the real "
        f"worker on this host: push p50 {push.p50_ms} / "
        f"p99 {push.p99_ms} ms, poll p50 {poll.p50_ms} / p99 {poll.p99_ms} ms "
        f"(poll/push p50 {poll.p50_ms / push.p50_ms:.2f}x); "
        f"goal p50 <= {args.latency + GOAL_P50_MS:g}, "
        f"p99 <= {args.latency + GOAL_P99_MS:g}: {_wait_goal(push, args.latency)}"
    )
    print(_budget_line(push, args.concurrency, args.latency))
    real_worker = "waiting req/s with the real worker on this host"
    print(_capacity_line(real_worker, poll, poll, push, two, args.latency))
    alone_push = alone_by[("alone-push-1", args.concurrency)]
    many = args.alone_concurrency
    print(
        f"the gateway alone (a stand-in worker answering after {args.latency:g} ms): wait at "
        f"concurrency {args.concurrency}: push p50 {alone_push.p50_ms} / p99 "
        f"{alone_push.p99_ms} ms; goal p50 <= {args.latency + GOAL_P50_MS:g}, "
        f"p99 <= {args.latency + GOAL_P99_MS:g}: {_wait_goal(alone_push, args.latency)}"
    )
    alone_poll = alone_by[("alone-poll-1", many)]
    print(
        _capacity_line(
            f"the gateway alone: waiting req/s at concurrency {many}",
            alone_by.get(("before-1", many), alone_poll),
            alone_poll,
            alone_by[("alone-push-1", many)],
            alone_by[("alone-push-2", many)],
            args.latency,
        )
    )
    by_part = ", ".join(
        f"{part} {ms:.2f}" for part, ms in alone_by[("alone-push-2", many)].parts_cpu_ms.items()
    )
    print(f"CPU ms per waiting request (alone-push-2 at concurrency {many}): {by_part}")
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
        f"{overload.shed_p99_ms} ms; inside the gateway, from its access log, p50 "
        f"{overload.shed_in_gateway_p50_ms} / p99 {overload.shed_in_gateway_p99_ms} ms), "
        f"{overload.served} served (p50 {overload.served_p50_ms} / p99 "
        f"{overload.served_p99_ms} ms), answers {json.dumps(overload.statuses)}; "
        f"goal 503 p99 <= {GOAL_SHED_P99_MS:g} ms and no connection errors: "
        f"{'met' if quick and not errors else 'NOT met'}; ready again "
        f"{overload.recovery_seconds} s after it stopped; "
        f"goal < {GOAL_RECOVERY_SECONDS:g} s: {'met' if recovered else 'NOT met'}"
    )
    if args.json:
        figures = {
            "sides": [asdict(s) for s in sides],
            "overload": asdict(overload),
            "alone": [asdict(s) for s in alone],
        }
        print(json.dumps(figures))
    bad = {s.name: s.statuses for s in sides if set(s.statuses) - {"200", "202"}}
    # The stand-in answers every job after --latency ms: a 202 (the wait ran out) is a fault.
    bad |= {f"{s.name}-c{s.concurrency}": s.statuses for s in alone if set(s.statuses) != {"200"}}
    if set(overload.statuses) - {"200", "503"}:
        bad["overload"] = overload.statuses
    if bad:
        print(f"error: unexpected statuses {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

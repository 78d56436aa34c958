"""Any producer speaking Celery's protocol on Redis is served at once, by real workers
under both pools (prefork, and threads with 16 threads), and each test prints its
latency (enqueue to envelope, jobs sent one at a time to an idle worker):

- a stock Celery app, in its own process, that imports nothing from this project
  (kombu's own Redis transport);
- a raw ``LPUSH`` of a protocol-2 JSON message, as a client in another language;
- the README's "From any Celery client" snippet, run as printed;
- a rolling upgrade: producers and workers of the previous release (a producer
  that pushes a wake-up token with each job; a worker without the queue watcher,
  ``CARDS_QUEUE_WATCHER=false``, which consumes exactly as that release did) next
  to new ones, with nothing lost, doubled or stuck.

The bound asserted is half the 1 s poll that such jobs used to wait for; the
figures printed are the measurement.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from celery import Celery

from cards.transport import wake_key
from harness.processes import BIN, REPO_ROOT, CeleryWorker, client_app, run_redis, run_worker
from harness.queues import raw_task_message
from producers import enqueue_set_default_card, get_result
from stripe_emulator.process import EmulatorProcess
from tests.integration.conftest import applied_writes, worker_env

pytestmark = pytest.mark.timeout(240)

TASK = "cards.set_default_card"
QUEUE = "cards"
JOBS = 20
#: Half the 1 s BRPOP timeout that a job without a wake-up token used to wait for.
BOUND_SECONDS = 0.5
POOLS: dict[str, tuple[int, tuple[str, ...]]] = {
    "prefork": (2, ("-P", "prefork")),
    "threads": (16, ("-P", "threads")),
}

#: A stock Celery producer: nothing from this project, kombu's own transport.
STOCK_CLIENT = """
import json, sys, time
from celery import Celery

app = Celery(broker=sys.argv[1], backend=sys.argv[1])
app.conf.task_default_queue = "cards"
latencies = []
for customer, card in json.loads(sys.argv[2]):
    began = time.monotonic()
    result = app.send_task(
        "cards.set_default_card", kwargs={"userId": customer, "default_source": card}
    )
    envelope = result.get(timeout=30)
    assert envelope["status"] is True, envelope
    latencies.append(time.monotonic() - began)
transport = type(app.connection_for_write().transport)
assert transport.__module__ == "kombu.transport.redis", transport
assert not [name for name in sys.modules if name.split(".")[0] in ("cards", "producers")]
print(json.dumps(latencies))
"""


@dataclass
class Stack:
    url: str
    app: Celery
    emulator: EmulatorProcess
    worker: CeleryWorker
    pool: str

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@pytest.fixture(scope="module", params=sorted(POOLS))
def stack(
    request: pytest.FixtureRequest, emulator: EmulatorProcess, logs_dir: Path
) -> Iterator[Stack]:
    pool = str(request.param)
    concurrency, args = POOLS[pool]
    with run_redis() as server:
        url = server.url()
        env = worker_env(url, emulator.url)
        log = logs_dir / f"any-producer-{pool}.log"
        with run_worker(env, log, concurrency=concurrency, name=pool, extra_args=args) as worker:
            yield Stack(url, client_app(url), emulator, worker, pool)


def pairs(emulator: EmulatorProcess, n: int) -> list[tuple[str, str]]:
    """``n`` fresh customers, each with the card its job makes the default."""
    return [(c["id"], c["cards"][1]) for c in emulator.admin.seed(n, cards_per_customer=2)]


def report(what: str, latencies: list[float]) -> float:
    p50 = statistics.median(latencies)
    print(
        f"\n{what}: p50 {p50 * 1000:.1f} ms, p90 "
        f"{statistics.quantiles(latencies, n=10)[-1] * 1000:.1f} ms, n={len(latencies)}"
    )
    return p50


def our_latencies(stack: Stack, jobs: list[tuple[str, str]]) -> list[float]:
    """The same jobs from this project's producer, for comparison."""
    latencies = []
    for customer, card in jobs:
        began = time.monotonic()
        job_id = enqueue_set_default_card(customer, card, app=stack.app)
        assert get_result(job_id, timeout=30, app=stack.app)["status"] is True
        latencies.append(time.monotonic() - began)
    return latencies


def push_raw(client: redis.Redis, customer: str, card: str, *, token: bool = False) -> str:
    """One job as a protocol-2 JSON message, with one LPUSH (and, as the previous
    release's producers did, a wake-up token in the same MULTI)."""
    job_id = str(uuid.uuid4())
    message = raw_task_message(TASK, {"userId": customer, "default_source": card}, job_id, QUEUE)
    with client.pipeline() as pipe:
        pipe.lpush(QUEUE, message)
        if token:
            pipe.lpush(wake_key(QUEUE), "1")
        pipe.execute()
    return job_id


def test_a_stock_celery_client_is_served_at_once(stack: Stack, tmp_path: Path) -> None:
    jobs = pairs(stack.emulator, JOBS * 2)
    script = tmp_path / "stock_client.py"
    script.write_text(STOCK_CLIENT)
    finished = subprocess.run(
        [str(BIN / "python"), "-I", str(script), stack.url, json.dumps(jobs[:JOBS])],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    stock = report(f"stock Celery client, {stack.pool}", json.loads(finished.stdout))
    ours = report(f"our producer, {stack.pool}", our_latencies(stack, jobs[JOBS:]))
    print(f"stock/ours p50 ratio: {stock / ours:.2f}")
    assert stock < BOUND_SECONDS
    for customer, card in jobs:
        assert stack.emulator.admin.get_customer(customer)["default_source"] == card


def test_a_raw_lpush_is_served_at_once(stack: Stack) -> None:
    client = stack.client()
    latencies = []
    for customer, card in pairs(stack.emulator, JOBS):
        began = time.monotonic()
        job_id = push_raw(client, customer, card)
        envelope = stack.app.AsyncResult(job_id).get(timeout=30)
        latencies.append(time.monotonic() - began)
        assert envelope["status"] is True, envelope
        assert applied_writes(stack.emulator, f"cards-sdc:{job_id}") == 1
    assert report(f"raw LPUSH, {stack.pool}", latencies) < BOUND_SECONDS


def readme_snippet(heading: str) -> str:
    """The first ```python block under ``heading`` in README.md."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(f"\n{heading}\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, f"no python block under {heading}"
    return match.group(1)


def test_the_readme_celery_client_snippet_works_as_printed(stack: Stack, tmp_path: Path) -> None:
    """The snippet, as printed; only its example customer and card become seeded ones."""
    snippet = readme_snippet("### From any Celery client")
    customer, card = pairs(stack.emulator, 1)[0]
    ids = re.findall(r'"(cus_\w+|card_\w+)"', snippet)
    assert len(ids) == 2, snippet
    script = tmp_path / "snippet.py"
    script.write_text(snippet.replace(ids[0], customer).replace(ids[1], card))
    began = time.monotonic()
    finished = subprocess.run(
        [str(BIN / "python"), "-I", str(script)],
        cwd=tmp_path,
        env={**os.environ, "CELERY_BROKER_URL": stack.url, "CELERY_RESULT_BACKEND": stack.url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    print(f"\nREADME snippet: {time.monotonic() - began:.2f} s, interpreter start included")
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "'status': True" in finished.stdout, finished.stdout
    assert stack.emulator.admin.get_customer(customer)["default_source"] == card


def test_a_rolling_upgrade_loses_nothing_and_strands_nothing(
    stack: Stack, emulator: EmulatorProcess, logs_dir: Path
) -> None:
    """Old-style and new producers, an old-style worker next to the new one: every
    job ends with one applied write, and none waits for the 1 s poll on average."""
    old_env = worker_env(stack.url, emulator.url, CARDS_QUEUE_WATCHER="false")
    concurrency, args = POOLS[stack.pool]
    log = logs_dir / f"old-style-{stack.pool}.log"
    jobs = pairs(emulator, 30)
    client = stack.client()
    latencies: dict[str, list[float]] = {"old producer": [], "new producer": [], "stock": []}
    with run_worker(
        old_env, log, concurrency=concurrency, name=f"old-{stack.pool}", extra_args=args
    ):
        lock = threading.Lock()

        def send(n: int, customer: str, card: str) -> str:
            kind = ("old producer", "new producer", "stock")[n % 3]
            began = time.monotonic()
            if kind == "stock":
                job_id = push_raw(client, customer, card)
            elif kind == "new producer":
                job_id = enqueue_set_default_card(customer, card, app=stack.app)
            else:
                job_id = push_raw(client, customer, card, token=True)
            envelope = stack.app.AsyncResult(job_id).get(timeout=60)
            assert envelope["status"] is True, envelope
            with lock:
                latencies[kind].append(time.monotonic() - began)
            return job_id

        # Three callers at a time, each waiting for its envelope, as gateways do.
        ids: list[str] = []
        callers = [
            threading.Thread(
                target=lambda part=part: ids.extend(
                    send(n, *job) for n, job in enumerate(jobs) if n % 3 == part
                )
            )
            for part in range(3)
        ]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(120)
    assert len(ids) == len(jobs)
    for kind, values in latencies.items():
        assert report(f"rolling upgrade, {kind}, {stack.pool}", values) < BOUND_SECONDS
    for job_id in ids:
        assert applied_writes(emulator, f"cards-sdc:{job_id}") == 1
    assert client.llen(QUEUE) == 0
    assert client.hlen("unacked") == 0

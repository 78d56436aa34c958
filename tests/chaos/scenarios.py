"""The chaos scenarios (issue 5 §2), each at a given size.

Every scenario starts its own Redis (append-only, restartable on its port), its
own Stripe emulator and real ``celery -A worker worker`` processes, breaks
something while a batch runs, and then judges the run from outside: the result
backend for envelopes, the emulator's ledger for Stripe writes, the emulator's
customers for the final state. One customer per job, so "final state correct"
means every customer's default is its job's target.

``tests/chaos/test_chaos.py`` runs them at CI size; ``python -m tests.chaos.run
--full`` at the issue's size, writing RELIABILITY.md.
"""

from __future__ import annotations

import gc
import itertools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery

from cards.settings import get_settings
from harness.chaos import (
    READY_STATES,
    Periodic,
    RestartableRedis,
    applied_writes_by_job,
    locate_jobs,
    nowhere,
    read_results,
    run_restartable_redis,
    wait_for_envelopes,
)
from harness.processes import CeleryWorker, client_app, in_parallel, start_worker, wait_for
from harness.rabbitmq import RabbitNode, own_vhost, run_rabbit_node
from harness.receiver import run_receiver
from harness.sentinel import SentinelCluster, run_sentinel_cluster
from producers import enqueue_set_default_card, get_callback_status, verify_callback
from stripe_emulator.process import EmulatorProcess, run_emulator
from tests.integration.conftest import (
    API_KEY,
    CALLBACK_SECRETS,
    RECEIVER_ALLOWED,
    RECEIVER_PORT,
    worker_env,
)

#: Redis redelivers a dead worker's job after this; twice the longest retry countdown.
VISIBILITY_TIMEOUT = 5
#: A dead worker's customer lock is free again after this.
CUSTOMER_LOCK_SECONDS = 5
#: R5: a worker given SIGTERM that has not exited by then counts as not shutting down.
SHUTDOWN_WAIT_SECONDS = 60


@dataclass
class Outcome:
    """What one scenario run did and what the ledger says about it."""

    id: str
    title: str
    size: str
    jobs: int = 0
    envelopes: int = 0
    ok: int = 0
    lost: list[str] = field(default_factory=list)
    max_applied_per_job: int = 0
    doubled: list[str] = field(default_factory=list)
    wrong_state: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    facts: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def correct(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [
            f"{self.id} {self.title} [{self.size}] in {self.duration_s:.1f}s: "
            f"jobs={self.jobs} envelopes={self.envelopes} ok={self.ok} lost={len(self.lost)} "
            f"max_applied_per_job={self.max_applied_per_job} doubled={len(self.doubled)} "
            f"wrong_state={len(self.wrong_state)}",
            f"  facts: {self.facts}",
        ]
        lines += [f"  PROBLEM: {problem}" for problem in self.problems]
        return "\n".join(lines)


@dataclass
class Stack:
    redis: RestartableRedis | SentinelCluster
    emulator: EmulatorProcess
    app: Celery
    logs: Path
    env: dict[str, str]
    workers: dict[str, CeleryWorker] = field(default_factory=dict)
    #: None: the plain command's configured pool and size, as deployed.
    concurrency: int | None = None
    #: The broker when it is RabbitMQ (a private node); Redis keeps results and state.
    rabbit: RabbitNode | None = None
    #: The scenario's vhost on that node (its own, on a node shared with other runs).
    vhost: str = "/"

    @property
    def broker(self) -> RestartableRedis | RabbitNode:
        """What R2 restarts: the RabbitMQ node, else Redis (never a Sentinel cluster)."""
        if self.rabbit is not None:
            return self.rabbit
        assert isinstance(self.redis, RestartableRedis)
        return self.redis

    def start(self, name: str) -> CeleryWorker:
        worker = start_worker(
            self.env, self.logs / f"{name}.log", name=name, concurrency=self.concurrency
        )
        self.workers[name] = worker
        return worker

    def start_all(self, names: list[str]) -> None:
        """Start these workers side by side (each boot takes seconds)."""
        in_parallel([lambda name=name: self.start(name) for name in names])

    def stranded(self, missing: list[str]) -> bool:
        """These jobs can no longer finish: no worker is up, or Redis holds no message
        of theirs (neither queued nor unacknowledged)."""
        if not any(worker.alive for worker in self.workers.values()):
            return True
        if self.rabbit is not None:  # no job message left in the job or delay queues
            counts = self.rabbit.messages(self.vhost)
            return not any(
                n for name, n in counts.items() if name.startswith(("cards", "celery_delayed_"))
            )
        return nowhere(self.redis.client(), missing, get_settings().queue)

    def wait_for_envelopes(self, job_ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
        """Every job's envelope, once all are final; earlier if the rest are stranded."""
        return wait_for_envelopes(self.redis.client(), job_ids, timeout, give_up=self.stranded)

    def stop_all(self) -> None:
        in_parallel([worker.stop for worker in list(self.workers.values())])


@contextmanager
def stack(
    workdir: Path,
    *,
    latency_ms: float,
    jitter_ms: float,
    fsync: str = "everysec",
    concurrency: int | None = None,
    sentinel: bool = False,
    broker: str = "redis",
    rabbit_node: RabbitNode | None = None,
    **overrides: str,
) -> Iterator[Stack]:
    """Redis (or, with ``sentinel``, a master, a replica and three sentinels), the
    emulator, and the settings workers get; the scenario starts the workers. With
    ``broker="rabbitmq"`` a private RabbitMQ node carries the jobs (``rabbit_node``,
    in a vhost of the run's own, or a node of the run's own) and Redis keeps
    results, job state and locks."""
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    store: AbstractContextManager[RestartableRedis | SentinelCluster] = (
        run_sentinel_cluster(workdir / "sentinel")
        if sentinel
        else run_restartable_redis(workdir / "redis", fsync=fsync)
    )
    rabbit = _rabbit(workdir, broker, rabbit_node)
    with (
        (logs / "emulator.log").open("ab") as emulator_log,
        store as server,
        rabbit as (node, vhost),
        run_emulator(
            api_key=API_KEY,
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            seed=5,
            stderr=emulator_log,  # a killed worker's dropped request is logged there
        ) as emu,
    ):
        broker_url = server.url() if node is None else node.url(vhost)
        env = worker_env(server.url(), emu.url, CELERY_BROKER_URL=broker_url, **overrides)
        app = client_app(broker_url, server.url())
        running = Stack(
            server, emu, app, logs, env, concurrency=concurrency, rabbit=node, vhost=vhost
        )
        try:
            yield running
        finally:
            running.stop_all()
            # Each send subscribed its result's pub/sub channel; an AsyncResult left in a
            # reference cycle unsubscribes when collected. Collect them while the broker
            # still answers: collected later, each would retry a stopped server.
            gc.collect()


@contextmanager
def _rabbit(
    workdir: Path, broker: str, shared: RabbitNode | None
) -> Iterator[tuple[RabbitNode | None, str]]:
    """The RabbitMQ node and vhost a run's jobs use: none on Redis, a vhost of its
    own on a ``shared`` node, else a node of its own."""
    if broker != "rabbitmq":
        yield None, "/"
    elif shared is not None:
        with own_vhost(shared, "chaos") as vhost:
            yield shared, vhost
    else:
        with run_rabbit_node(workdir / "rabbitmq") as node:
            yield node, "/"


def on_broker(broker: str) -> str:
    """A scenario title's note of a broker other than Redis."""
    return " on RabbitMQ" if broker == "rabbitmq" else ""


def chaos_env(**overrides: str) -> dict[str, str]:
    """Worker settings for every scenario: a dead worker's job and lock come back fast."""
    return {
        "CARDS_VISIBILITY_TIMEOUT_SECONDS": str(VISIBILITY_TIMEOUT),
        "CARDS_UNACKED_RESTORE_INTERVAL_SECONDS": "1",
        "CARDS_CUSTOMER_LOCK_SECONDS": str(CUSTOMER_LOCK_SECONDS),
        "CARDS_STRIPE_TIMEOUT_SECONDS": "2",
        "CARDS_RETRY_MAX_ATTEMPTS": "20",
        **overrides,
    }


def seed(emulator: EmulatorProcess, n: int) -> list[tuple[str, str]]:
    """``n`` customers, each with the card its job will make the default (not the current one)."""
    pairs = []
    for customer in emulator.admin.seed(n, cards_per_customer=2):
        target = customer["cards"][1]
        assert customer["default_source"] != target
        pairs.append((customer["id"], target))
    return pairs


def judge(
    outcome: Outcome,
    running: Stack,
    jobs: dict[str, tuple[str, str]],
    envelopes: dict[str, dict[str, Any]],
    *,
    all_ok: bool = True,
) -> None:
    """Fill in the figures every scenario shares, and the problems they show.

    ``jobs``: job id → (customer, target card). A job is lost when it has no
    envelope; doubled when Stripe applied more than one write for it (over all
    its key generations) or its customer saw more than one applied write.
    """
    admin = running.emulator.admin
    ledger = admin.ledger(events=False)
    per_job = applied_writes_by_job(ledger["writes_applied_by_key"])
    per_customer = ledger["writes_applied_by_customer"]
    outcome.jobs = len(jobs)
    outcome.envelopes = len(envelopes)
    outcome.ok = sum(1 for envelope in envelopes.values() if envelope["status"] is True)
    outcome.lost = sorted(set(jobs) - set(envelopes))
    outcome.max_applied_per_job = max(per_job.values(), default=0)
    outcome.doubled = sorted(
        job_id
        for job_id, (customer, _) in jobs.items()
        if per_job.get(job_id, 0) > 1 or int(per_customer.get(customer, 0)) > 1
    )
    # A customer must be on its job's card whenever the job says it succeeded (a lost
    # job is counted as lost, whatever its customer's state).
    outcome.wrong_state = sorted(
        customer
        for job_id, (customer, target) in jobs.items()
        if job_id in envelopes
        and envelopes[job_id]["status"] is True
        and admin.get_customer(customer)["default_source"] != target
    )
    outcome.facts["replayed_writes"] = int(ledger["replays_total"])
    outcome.facts["jobs_replayed"] = sum(
        1 for key in ledger["replays_by_key"] if key.startswith("cards-sdc:")
    )
    outcome.facts["faults_injected"] = dict(ledger["faults_injected"])
    outcome.facts["max_concurrent_writes_per_customer"] = max(
        ledger["max_concurrent_writes_by_customer"].values(), default=0
    )
    failed = {
        job_id: envelope for job_id, envelope in envelopes.items() if envelope["status"] is not True
    }
    if outcome.lost:
        client = running.redis.client()
        states = {
            job_id: meta["status"] for job_id, meta in read_results(client, outcome.lost).items()
        }
        by_state: dict[str, list[str]] = {}
        for job_id in outcome.lost:
            by_state.setdefault(states.get(job_id, "none"), []).append(job_id)
        for state, lost in sorted(by_state.items()):
            if state == "none":
                what = "have no result at all"
            elif state in READY_STATES:
                what = f"ended in Celery state {state}"
            else:
                what = f"never finished (Celery state {state})"
            outcome.problems.append(f"{len(lost)} jobs {what}, without an envelope: {lost[:10]}")
        outcome.facts["lost_where"] = locate_jobs(client, outcome.lost[:10], get_settings().queue)
        events = running.emulator.admin.ledger(events=True)["events"]
        outcome.facts["lost_stripe_events"] = {
            job_id: [
                (e["idempotency_key"], e["status"], e["applied"], e["replayed"], e["fault"])
                for e in events
                if (e["idempotency_key"] or "").startswith(f"cards-sdc:{job_id}")
            ]
            for job_id in outcome.lost[:10]
        }
    if outcome.doubled:
        outcome.problems.append(
            f"{len(outcome.doubled)} jobs with more than one applied write: "
            + ", ".join(
                f"{job_id} ({per_job.get(job_id, 0)} by key)" for job_id in outcome.doubled[:10]
            )
        )
    if outcome.wrong_state:
        outcome.problems.append(
            f"{len(outcome.wrong_state)} customers not on their job's card, though the job "
            "succeeded: "
            f"{outcome.wrong_state[:10]}"
        )
    if all_ok and failed:
        sample = {job_id: (e["message"], e["data"]) for job_id, e in list(failed.items())[:5]}
        outcome.problems.append(f"{len(failed)} envelopes with status false: {sample}")


def enqueue_all(running: Stack, pairs: list[tuple[str, str]], **kwargs: Any) -> dict[str, Any]:
    return {
        enqueue_set_default_card(customer, target, app=running.app, **kwargs): (customer, target)
        for customer, target in pairs
    }


def _finish(
    outcome: Outcome,
    running: Stack,
    jobs: dict[str, tuple[str, str]],
    timeout: float,
    started: float,
    *,
    stop_when_done: Periodic | None = None,
) -> dict[str, dict[str, Any]]:
    envelopes = running.wait_for_envelopes(list(jobs), timeout)
    outcome.duration_s = time.monotonic() - started
    if stop_when_done is not None:
        stop_when_done.stop()
    return envelopes


class PacedProducer:
    """Enqueue jobs at ``rate`` per second in a thread, through the producer API,
    keeping what was sent and every enqueue that raised. With ``enough``, it stops
    before the ``i``-th pair once ``enough(i)`` holds (else it sends every pair)."""

    def __init__(
        self,
        running: Stack,
        pairs: list[tuple[str, str]],
        rate: float,
        enough: Callable[[int], bool] | None = None,
    ) -> None:
        self.running = running
        self.pairs = pairs
        self.rate = rate
        self.enough = enough
        self.sent: dict[str, tuple[str, str]] = {}
        self.errors: list[str] = []
        self.finished = False
        self._progress = threading.Condition()
        self._thread = threading.Thread(target=self._produce, name="producer", daemon=True)

    def _produce(self) -> None:
        began = time.monotonic()
        for i, (customer, target) in enumerate(self.pairs):
            if self.enough is not None and self.enough(i):
                break
            time.sleep(max(0.0, began + i / self.rate - time.monotonic()))  # the pace
            try:
                job_id = enqueue_set_default_card(customer, target, app=self.running.app)
            except Exception as exc:  # the producer did not get through by itself
                self.errors.append(f"{customer}: {type(exc).__name__}: {exc}")
                continue
            with self._progress:
                self.sent[job_id] = (customer, target)
                self._progress.notify_all()
        with self._progress:
            self.finished = True
            self._progress.notify_all()

    def wait_sent(self, count: float, timeout: float) -> None:
        """Until ``count`` jobs are sent or the producer has stopped sending."""
        with self._progress:
            self._progress.wait_for(lambda: len(self.sent) >= count or self.finished, timeout)

    def __enter__(self) -> PacedProducer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._thread.join()


# --------------------------------------------------------------------------- R1


def r1_kill_workers(
    workdir: Path,
    *,
    jobs: int,
    kill_every: float = 2.0,
    latency_ms: float = 30,
    workers: int = 3,
    concurrency: int | None = None,
    max_kills: int | None = None,
    timeout: float = 300,
    broker: str = "redis",
    rabbit_node: RabbitNode | None = None,
) -> Outcome:
    """SIGKILL a worker every ~2 s during the batch, restarting it each time.

    A worker takes seconds to boot, so the killer picks a worker that is up
    (round robin) and its replacement boots in the background; it skips a
    tick rather than kill the last worker that is up. ``concurrency`` (jobs in
    flight per worker, in the default pool) keeps the batch longer than a few kills.
    After ``max_kills`` (if given) the killer stops and the batch must finish: on a
    loaded machine boots are slow, and endless kills could keep a job from ever running.
    """
    outcome = Outcome(
        "R1",
        "SIGKILL a worker every ~2 s, restart it" + on_broker(broker),
        f"{jobs} jobs, {workers} workers, a kill every {kill_every} s",
    )
    with stack(
        workdir,
        latency_ms=latency_ms,
        jitter_ms=latency_ms,
        concurrency=concurrency,
        broker=broker,
        rabbit_node=rabbit_node,
        **chaos_env(),
    ) as running:
        pairs = seed(running.emulator, jobs)
        names = [f"r1-{chr(ord('a') + i)}" for i in range(workers)]
        running.start_all(names)
        booting: dict[str, threading.Thread] = {}
        kills: list[float] = []
        skipped = 0
        boot_errors: list[BaseException] = []

        def restart(name: str) -> None:
            try:
                running.start(name)
            except BaseException as exc:
                boot_errors.append(exc)

        def kill_one(count: int) -> None:
            nonlocal skipped
            for name, thread in list(booting.items()):
                if not thread.is_alive():
                    del booting[name]
            up = [name for name in names if name not in booting]
            if max_kills is not None and len(kills) >= max_kills:
                return
            if len(up) < 2:
                skipped += 1
                return
            name = up[count % len(up)]
            running.workers[name].kill()
            kills.append(time.monotonic())
            booting[name] = threading.Thread(target=restart, args=(name,), name=f"boot-{name}")
            booting[name].start()

        started = time.monotonic()
        # Kills start with the sends: with publisher confirms (RabbitMQ) sending the
        # batch takes about as long as running it.
        with Periodic(kill_every, kill_one, "r1-killer") as killer:
            sent = enqueue_all(running, pairs)
            envelopes = running.wait_for_envelopes(list(sent), timeout)
        outcome.duration_s = time.monotonic() - started
        for thread in booting.values():
            thread.join()
        if killer.error is not None:
            raise killer.error
        if boot_errors:
            raise boot_errors[0]
        outcome.facts["kills"] = len(kills)
        outcome.facts["ticks_skipped_last_worker_up"] = skipped
        gaps = [b - a for a, b in itertools.pairwise(kills)]
        outcome.facts["mean_s_between_kills"] = round(sum(gaps) / len(gaps), 2) if gaps else None
        judge(outcome, running, sent, envelopes)
        if len(kills) < 2:
            outcome.problems.append(f"only {len(kills)} kills landed during the batch")
    return outcome


# --------------------------------------------------------------------------- R2


def r2_restart_redis(
    workdir: Path,
    *,
    jobs: int,
    rate: float,
    timeout: float = 300,
    broker: str = "redis",
    rabbit_node: RabbitNode | None = None,
) -> Outcome:
    """Restart the broker twice mid-batch (once SIGTERM, once SIGKILL) while a producer
    keeps sending at ``rate`` jobs/s: Redis (AOF, fsync always), or the private
    RabbitMQ node (quorum queues) with ``broker="rabbitmq"``."""
    title = (
        "restart the RabbitMQ node twice mid-batch (quorum queues)"
        if broker == "rabbitmq"
        else "restart Redis twice mid-batch (AOF, appendfsync always)"
    )
    outcome = Outcome("R2", title, f"{jobs} jobs sent at {rate:.0f}/s")
    with stack(
        workdir,
        latency_ms=10,
        jitter_ms=10,
        fsync="always",
        broker=broker,
        rabbit_node=rabbit_node,
        **chaos_env(),
    ) as running:
        pairs = seed(running.emulator, jobs)
        running.start_all(["r2-a", "r2-b"])
        started = time.monotonic()
        with PacedProducer(running, pairs, rate) as producer:
            downtimes = []
            for fraction, crash in ((1 / 3, False), (2 / 3, True)):
                producer.wait_sent(fraction * jobs, timeout)
                downtimes.append(round(running.broker.restart(crash=crash), 3))
        sent, errors = producer.sent, producer.errors
        envelopes = running.wait_for_envelopes(list(sent), timeout)
        outcome.duration_s = time.monotonic() - started
        outcome.facts["restarts"] = "SIGTERM then SIGKILL"
        outcome.facts[f"{'rabbitmq' if running.rabbit else 'redis'}_down_s"] = downtimes
        outcome.facts["enqueue_errors"] = len(errors)
        outcome.facts["workers_alive"] = all(w.alive for w in running.workers.values())
        outcome.facts["worker_exits"] = {
            name: _last_critical(worker)
            for name, worker in running.workers.items()
            if not worker.alive
        }
        judge(outcome, running, sent, envelopes)
        if errors:
            outcome.problems.append(f"{len(errors)} enqueues failed: {errors[:3]}")
        if not outcome.facts["workers_alive"]:
            outcome.problems.append(
                f"a worker exited instead of reconnecting: {outcome.facts['worker_exits']}"
            )
    return outcome


def _last_critical(worker: CeleryWorker) -> str:
    """The worker's last CRITICAL log line (why it stopped), without its timestamp."""
    lines = [line for line in worker.log.splitlines() if "CRITICAL/" in line]
    return lines[-1].split("] ", 1)[-1] if lines else f"exit code {worker.process.returncode}"


# --------------------------------------------------------------------------- R3

R3_FAULTS = {
    "error_500": 0.10,
    "timeout_after_commit": 0.05,
    "rate_limit": 0.05,
    "conflict_409": 0.02,
    "connection_reset": 0.02,
}


def r3_stripe_faults(workdir: Path, *, jobs: int, timeout: float = 300) -> Outcome:
    """The emulator's random faults on every customer update."""
    faults = ", ".join(f"{int(rate * 100)}% {kind}" for kind, rate in R3_FAULTS.items())
    outcome = Outcome("R3", f"Stripe faults: {faults}", f"{jobs} jobs")
    env = chaos_env(CARDS_STRIPE_TIMEOUT_SECONDS="1")
    with stack(workdir, latency_ms=5, jitter_ms=10, **env) as running:
        pairs = seed(running.emulator, jobs)
        running.emulator.admin.configure(faults=R3_FAULTS, hang_seconds=2)
        running.start_all(["r3-a", "r3-b"])
        started = time.monotonic()
        sent = enqueue_all(running, pairs)
        envelopes = _finish(outcome, running, sent, timeout, started)
        running.emulator.admin.configure(faults={})
        attempts = [
            int(e["data"]["attempts"]) for e in envelopes.values() if not e["status"] and e["data"]
        ]
        outcome.facts["failed_attempts"] = attempts[:10]
        judge(outcome, running, sent, envelopes)
    return outcome


# --------------------------------------------------------------------------- R4


@contextmanager
def producer_allows_loopback() -> Iterator[None]:
    """This process enqueues callbacks to 127.0.0.1: its settings must allow it."""
    before = os.environ.get("CARDS_CALLBACK_ALLOWED_HOSTS")
    os.environ["CARDS_CALLBACK_ALLOWED_HOSTS"] = RECEIVER_ALLOWED
    get_settings.cache_clear()
    try:
        yield
    finally:
        if before is None:
            del os.environ["CARDS_CALLBACK_ALLOWED_HOSTS"]
        else:
            os.environ["CARDS_CALLBACK_ALLOWED_HOSTS"] = before
        get_settings.cache_clear()


def _valid_signature(headers: dict[str, str], body: bytes) -> dict[str, Any] | None:
    for secret in CALLBACK_SECRETS:
        try:
            return verify_callback(headers, body, secret)
        except ValueError:
            continue
    return None


def r4_receiver_down(
    workdir: Path, *, jobs: int, down_seconds: float, timeout: float = 300
) -> Outcome:
    """Callbacks to a receiver that is down for ``down_seconds``, then up."""
    outcome = Outcome(
        "R4",
        "callback receiver down, then up",
        f"{jobs} jobs with callbacks, receiver down {down_seconds:.0f} s",
    )
    env = chaos_env(
        CARDS_CALLBACK_MAX_ATTEMPTS="100",
        CARDS_CALLBACK_BACKOFF_SECONDS="1",
        CARDS_CALLBACK_BACKOFF_MAX_SECONDS="2",
    )
    with (
        producer_allows_loopback(),
        stack(workdir, latency_ms=5, jitter_ms=5, **env) as running,
    ):
        pairs = seed(running.emulator, jobs)
        running.start_all(["r4-a", "r4-b"])
        port = RECEIVER_PORT  # nothing listens there until the receiver comes up
        url = f"http://127.0.0.1:{port}/chaos"
        started = time.monotonic()
        sent = enqueue_all(running, pairs, callback_url=url)
        envelopes = running.wait_for_envelopes(list(sent), timeout)
        state_url = running.redis.url()

        def attempted(job_id: str) -> bool:
            status = get_callback_status(job_id, redis_url=state_url)
            return status is not None and status["attempts"] >= 1

        wait_for(lambda: all(attempted(j) for j in sent), timeout, "a first callback attempt each")
        # The scenario: the receiver stays down this long after the batch started.
        time.sleep(max(0.0, started + down_seconds - time.monotonic()))
        while_down = {job_id: get_callback_status(job_id, redis_url=state_url) for job_id in sent}
        outcome.facts["delivered_while_down"] = sum(
            1 for s in while_down.values() if s and s["state"] == "delivered"
        )
        outcome.facts["failed_while_down"] = sum(
            1 for s in while_down.values() if s and s["state"] == "failed"
        )
        up_at = time.monotonic()
        with run_receiver(port) as receiver:

            def settled(job_id: str) -> bool:
                status = get_callback_status(job_id, redis_url=state_url)
                return status is not None and status["state"] != "pending"

            try:
                wait_for(lambda: all(settled(j) for j in sent), timeout, "callbacks to settle")
            except TimeoutError as exc:
                outcome.problems.append(str(exc))
            outcome.duration_s = time.monotonic() - started
            outcome.facts["all_delivered_s_after_up"] = round(time.monotonic() - up_at, 1)
            received = receiver.received("/chaos")
        statuses = {job_id: get_callback_status(job_id, redis_url=state_url) for job_id in sent}
        judge(outcome, running, sent, envelopes)
        by_job: dict[str, int] = {}
        invalid = 0
        for request in received:
            payload = _valid_signature(request.headers, request.body)
            if payload is None or payload["job_id"] != request.headers.get("webhook-id"):
                invalid += 1
                continue
            by_job[payload["job_id"]] = by_job.get(payload["job_id"], 0) + 1
        not_delivered = sorted(j for j in sent if (statuses[j] or {}).get("state") != "delivered")
        missing = sorted(set(sent) - set(by_job))
        outcome.facts["callbacks_received"] = len(received)
        outcome.facts["callbacks_invalid_signature"] = invalid
        outcome.facts["callbacks_duplicated"] = sum(1 for n in by_job.values() if n > 1)
        outcome.facts["max_attempts_per_callback"] = max(
            (int((s or {}).get("attempts", 0)) for s in statuses.values()), default=0
        )
        if invalid:
            outcome.problems.append(f"{invalid} callbacks with an invalid signature")
        if missing:
            outcome.problems.append(f"{len(missing)} jobs never got a callback: {missing[:10]}")
        if not_delivered:
            sample = {j: statuses[j] for j in not_delivered[:3]}
            outcome.problems.append(f"{len(not_delivered)} callbacks not delivered: {sample}")
        if outcome.facts["delivered_while_down"]:
            outcome.problems.append("callbacks recorded delivered while the receiver was down")
    return outcome


# --------------------------------------------------------------------------- R5


def r5_sigterm_deploys(
    workdir: Path,
    *,
    jobs: int,
    rate: float,
    deploy_every: float = 3.0,
    latency_ms: float = 30,
    timeout: float = 300,
    broker: str = "redis",
    rabbit_node: RabbitNode | None = None,
) -> Outcome:
    """Rolling deploys while a producer sends at ``rate`` jobs/s: every few seconds one
    of two workers gets SIGTERM (alternately its main process only, as ``docker
    stop`` or Kubernetes do, and its whole process group, as systemd does) while
    its replacement boots; the old one must finish its jobs and exit by itself.

    The producer sends ``jobs`` jobs, and goes on at the same pace (up to as many
    again) until two deploys have landed: on a loaded machine a replacement boots
    slowly, and a fixed-length batch could end before its second deploy."""
    outcome = Outcome(
        "R5",
        "SIGTERM during work (rolling deploys)" + on_broker(broker),
        f"{jobs}+ jobs sent at {rate:.0f}/s, a deploy every {deploy_every} s",
    )
    with stack(
        workdir,
        latency_ms=latency_ms,
        jitter_ms=latency_ms / 2,
        broker=broker,
        rabbit_node=rabbit_node,
        **chaos_env(),
    ) as running:
        pairs = seed(running.emulator, 2 * jobs)
        slots = ["r5-a0", "r5-b0"]
        running.start_all(slots)
        exits: list[tuple[str, int | None, float]] = []
        in_flight_at_sigterm: list[int] = []

        def shut_down(worker: CeleryWorker, whole_group: bool) -> None:
            began = time.monotonic()
            if whole_group:
                os.killpg(worker.process.pid, signal.SIGTERM)
            else:
                worker.process.send_signal(signal.SIGTERM)
            try:
                code: int | None = worker.process.wait(SHUTDOWN_WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                worker.kill()
                code = None  # it did not shut down by itself
            exits.append(("group" if whole_group else "main", code, time.monotonic() - began))

        stopping: list[threading.Thread] = []
        landed: list[int] = []  # deploys whose replacement is up

        def deploy(count: int) -> None:
            slot = count % len(slots)
            old = running.workers.pop(slots[slot])
            slots[slot] = f"{slots[slot][:4]}{count + 1}"
            in_flight_at_sigterm.append(running.emulator.admin.health()["writes_in_flight"])
            # A rolling deploy waits for the new worker to be up, not for the old one
            # to be gone: a warm shutdown can take half a minute (it restores what
            # the worker had reserved), and the next deploy must not wait for it.
            stopping.append(
                threading.Thread(
                    target=shut_down, args=(old, count % 2 == 1), name=f"r5-stop-{count}"
                )
            )
            stopping[-1].start()
            running.start(slots[slot])
            landed.append(count)

        def enough(sent: int) -> bool:
            return sent >= jobs and len(landed) >= 2

        started = time.monotonic()
        with (
            PacedProducer(running, pairs, rate, enough) as producer,
            Periodic(deploy_every, deploy, "r5-deployer") as deployer,
        ):
            producer.wait_sent(len(pairs), timeout)
            envelopes = running.wait_for_envelopes(list(producer.sent), timeout)
        for thread in stopping:
            thread.join(SHUTDOWN_WAIT_SECONDS + 10)
        outcome.duration_s = time.monotonic() - started
        if deployer.error is not None:
            raise deployer.error
        outcome.facts["deploys"] = deployer.count
        outcome.facts["stripe_writes_in_flight_at_sigterm"] = in_flight_at_sigterm
        outcome.facts["exit_codes"] = sorted({f"{how}:{code}" for how, code, _ in exits})
        outcome.facts["max_shutdown_s"] = round(max((s for *_, s in exits), default=0.0), 2)
        outcome.facts["enqueue_errors"] = len(producer.errors)
        judge(outcome, running, producer.sent, envelopes)
        if any(code != 0 for _, code, _ in exits):
            outcome.problems.append(f"a worker did not shut down cleanly: {exits}")
        if deployer.count < 2:
            outcome.problems.append(f"only {deployer.count} deploys landed during the batch")
        if producer.errors:
            outcome.problems.append(f"{len(producer.errors)} enqueues failed")
    return outcome


# --------------------------------------------------------------------------- R6


def r6_sentinel_failover(workdir: Path, *, jobs: int, rate: float, timeout: float = 300) -> Outcome:
    """SIGKILL the master of a Sentinel deployment (one replica, three sentinels)
    mid-batch while a producer keeps sending at ``rate`` jobs/s; workers and
    producer follow the failover by themselves.

    Replication is asynchronous: a job the old master acknowledged but had not yet
    sent to its replica is gone after the failover. Those are counted
    (``lost_to_replication``), then re-sent under the same job id, as a producer
    does with a job that has no result (``cards migrate resume`` for a migration);
    their idempotency keys make that safe. The outcome counts what is lost after.
    """
    outcome = Outcome(
        "R6",
        "Sentinel failover mid-batch (SIGKILL the master)",
        f"{jobs} jobs sent at {rate:.0f}/s, 1 master, 1 replica, 3 sentinels",
    )
    with stack(workdir, latency_ms=10, jitter_ms=10, sentinel=True, **chaos_env()) as running:
        cluster = running.redis
        assert isinstance(cluster, SentinelCluster)
        pairs = seed(running.emulator, jobs)
        running.start_all(["r6-a", "r6-b"])
        started = time.monotonic()
        with PacedProducer(running, pairs, rate) as producer:
            producer.wait_sent(jobs / 2, timeout)
            old_master = cluster.kill_master()
            failover_s = cluster.wait_for_failover(old_master)
        sent, errors = producer.sent, producer.errors
        envelopes = running.wait_for_envelopes(list(sent), timeout)
        unfinished = {job_id: sent[job_id] for job_id in sent if job_id not in envelopes}
        client = cluster.client()
        gone = [j for j in unfinished if nowhere(client, [j], get_settings().queue)]
        for job_id in gone:
            customer, target = unfinished[job_id]
            enqueue_set_default_card(customer, target, job_id=job_id, app=running.app)
        if gone:
            envelopes.update(running.wait_for_envelopes(gone, timeout))
        outcome.duration_s = time.monotonic() - started
        outcome.facts["failover_s"] = round(failover_s, 2)
        outcome.facts["lost_to_replication"] = len(gone)
        outcome.facts["resent"] = len(gone)
        outcome.facts["enqueue_errors"] = len(errors)
        outcome.facts["workers_alive"] = all(w.alive for w in running.workers.values())
        judge(outcome, running, sent, envelopes)
        if errors:
            outcome.problems.append(f"{len(errors)} enqueues failed: {errors[:3]}")
        if not outcome.facts["workers_alive"]:
            outcome.problems.append("a worker exited instead of following the failover")
    return outcome


SCENARIOS: dict[str, Callable[..., Outcome]] = {
    "R1": r1_kill_workers,
    "R2": r2_restart_redis,
    "R3": r3_stripe_faults,
    "R4": r4_receiver_down,
    "R5": r5_sigterm_deploys,
    "R6": r6_sentinel_failover,
}


@dataclass(frozen=True)
class KnownBug:
    """A worker bug a scenario found that is not fixed yet: the problem text it
    produces (a substring) and what it is."""

    signature: str
    explanation: str


#: Bugs found by this suite and not fixed yet. test_chaos.py reports a run whose
#: only problems are these as XFAIL (any other problem fails it); RELIABILITY.md
#: explains them. Delete an entry once its bug is fixed: the scenario must then pass.
#:
#: Fixed, so no longer here (cards/transport/, RELIABILITY.md): kombu's Redis
#: transport lost a message popped by BRPOP before its ``unacked`` record (R1, R2,
#: R5: celery/celery#4354), and a worker exited on ``AttributeError`` in
#: ``_connparams`` when Redis restarted (R2).
KNOWN_BUGS: dict[str, tuple[KnownBug, ...]] = {}

#: The scenarios that also run with RabbitMQ as the broker (``broker="rabbitmq"``).
RABBITMQ_SCENARIOS = ("R1", "R2", "R5")

#: Keyword arguments per scenario: "ci" runs in `make test` (a few seconds of chaos
#: each); "full" is the issue's size (`make chaos`).
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "ci": {
        # 3 workers x 8 threads at 300 ms: about 60 jobs/s under kills: 5 or more kills
        # land; at most 12, then the batch must finish (a loaded machine boots slowly).
        "R1": {
            "jobs": 400,
            "kill_every": 2.0,
            "latency_ms": 300,
            "concurrency": 8,
            "max_kills": 12,
        },
        "R2": {"jobs": 300, "rate": 50},
        "R3": {"jobs": 200},
        "R4": {"jobs": 60, "down_seconds": 5},
        "R5": {"jobs": 300, "rate": 20, "deploy_every": 3.0, "latency_ms": 200},
        "R6": {"jobs": 200, "rate": 50},
    },
    "full": {
        "R1": {"jobs": 2000, "kill_every": 2.0, "latency_ms": 200, "concurrency": 8},
        "R2": {"jobs": 2000, "rate": 100},
        "R3": {"jobs": 2000},
        "R4": {"jobs": 300, "down_seconds": 30},
        "R5": {"jobs": 2000, "rate": 50, "deploy_every": 4.0, "latency_ms": 60},
        "R6": {"jobs": 2000, "rate": 100},
    },
}

#: Sizes that differ with RabbitMQ as the broker: a worker boots slower there (it
#: declares the 28 delay queues), so R5's batch runs longer for 2 deploys to land.
RABBITMQ_SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "ci": {"R5": {"jobs": 700}},
    "full": {},
}


def size_of(size: str, scenario: str, broker: str = "redis") -> dict[str, Any]:
    """The keyword arguments of ``scenario`` at ``size`` ("ci" or "full") on ``broker``."""
    if broker == "redis":
        return dict(SIZES[size][scenario])
    return {**SIZES[size][scenario], **RABBITMQ_SIZES[size].get(scenario, {}), "broker": broker}

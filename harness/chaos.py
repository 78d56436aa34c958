"""Tools for chaos runs: restartable servers (a Redis restarted on its port), a periodic
driver, envelopes read in bulk, and Stripe writes counted per job from the emulator's ledger.

Used by ``tests/chaos`` (CI size under pytest, full size with ``make chaos``).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from harness.processes import free_port, wait_for

__all__ = [
    "READY_STATES",
    "Periodic",
    "Restartable",
    "RestartableRedis",
    "applied_writes_by_job",
    "envelopes_of",
    "locate_jobs",
    "nowhere",
    "read_envelopes",
    "read_results",
    "run_restartable_redis",
    "wait_for_envelopes",
]

#: Celery's Redis result backend keeps a task's result under this key.
RESULT_KEY_PREFIX = "celery-task-meta-"
#: Keys per MGET when reading envelopes.
MGET_CHUNK = 500
#: ``cards-sdc:<job_id>`` or ``cards-sdc:<job_id>:g<N>`` (a later key generation).
_JOB_KEY = re.compile(r"^cards-sdc:(?P<job>.+?)(?::g\d+)?$")


def _answers_ping(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=0.5).ping())
    except redis.RedisError:  # refused, or still loading its AOF
        return False


class Restartable:
    """A server that stops (cleanly, or crashing) and starts again on the same ports."""

    restarts: int

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, *, crash: bool = False) -> None:
        raise NotImplementedError

    def restart(self, *, crash: bool = False) -> float:
        """Stop and start again on the same ports; the seconds it was unreachable."""
        began = time.monotonic()
        self.stop(crash=crash)
        self.start()
        self.restarts += 1
        return time.monotonic() - began


@dataclass
class RestartableRedis(Restartable):
    """A private ``redis-server`` with an append-only file, restartable on the same port.

    ``--appendfsync always``: every acknowledged write is on disk before the
    answer, so a SIGKILLed server comes back with all of them.
    """

    data_dir: Path
    port: int = field(default_factory=free_port)
    fsync: str = "always"
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(port=self.port, db=db, socket_timeout=5)

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                self.fsync,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(lambda: _answers_ping(self.port), 30, f"redis-server on port {self.port}")

    def stop(self, *, crash: bool = False) -> None:
        """SIGTERM (Redis flushes and exits) or, with ``crash``, SIGKILL."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
        self.process.wait(30)


@contextmanager
def run_restartable_redis(data_dir: Path, fsync: str = "always") -> Iterator[RestartableRedis]:
    server = RestartableRedis(data_dir, fsync=fsync)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Periodic:
    """Run ``action(n)`` every ``interval`` seconds in a thread until stopped.

    This is a chaos *driver* (kill a worker every ~2 s), not synchronisation.
    An exception stops the driver and is kept in ``error``.
    """

    def __init__(self, interval: float, action: Callable[[int], None], name: str) -> None:
        self.interval = interval
        self.action = action
        self.count = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        began = time.monotonic()
        # Fixed rate: the n-th action is due n intervals after the start, however
        # long the previous one took (a restart takes a second or two).
        while not self._stop.wait(
            max(0.0, began + (self.count + 1) * self.interval - time.monotonic())
        ):
            try:
                self.action(self.count)
            except BaseException as exc:  # kept for the caller to re-raise
                self.error = exc
                return
            self.count += 1

    def __enter__(self) -> Periodic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)


#: Celery states after which a job's result never changes by itself.
READY_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


def read_results(client: redis.Redis, job_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The result backend's record (``status``, ``result``, …) of every job that has one."""
    found: dict[str, dict[str, Any]] = {}
    ids = list(job_ids)
    for start in range(0, len(ids), MGET_CHUNK):
        chunk = ids[start : start + MGET_CHUNK]
        values = client.mget([RESULT_KEY_PREFIX + job_id for job_id in chunk])
        for job_id, raw in zip(chunk, values, strict=True):
            if raw is not None:
                found[job_id] = json.loads(raw)
    return found


def envelopes_of(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The envelopes among results: state SUCCESS with a dict result."""
    return {
        job_id: meta["result"]
        for job_id, meta in results.items()
        if meta.get("status") == "SUCCESS" and isinstance(meta.get("result"), dict)
    }


def read_envelopes(client: redis.Redis, job_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The finished jobs' envelopes by job id (jobs without a SUCCESS result are left out)."""
    return envelopes_of(read_results(client, job_ids))


def wait_for_envelopes(
    client: redis.Redis,
    job_ids: Iterable[str],
    timeout: float,
    *,
    poll: float = 0.2,
    give_up: Callable[[list[str]], bool] | None = None,
    stall_seconds: float = 15.0,
) -> dict[str, dict[str, Any]]:
    """Wait until every job's result is final (or ``timeout``), and return the envelopes.

    Once no job has finished for ``stall_seconds``, ``give_up(missing)`` may end
    the wait early: it says the missing jobs can no longer finish.

    A job that ended in another final state (FAILURE: an exception escaped the
    task) has no envelope; the caller compares the count with the jobs it sent.
    A Redis that is down counts as nothing new.
    """
    ids = list(job_ids)
    final: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    progressed = time.monotonic()
    while True:
        missing = [job_id for job_id in ids if job_id not in final]
        with suppress(redis.RedisError):
            results = read_results(client, missing)
            done = {j: meta for j, meta in results.items() if meta["status"] in READY_STATES}
            if done:
                final.update(done)
                progressed = time.monotonic()
        if len(final) == len(ids) or time.monotonic() > deadline:
            return envelopes_of(final)
        if give_up is not None and time.monotonic() - progressed > stall_seconds:
            with suppress(redis.RedisError):
                if give_up([job_id for job_id in ids if job_id not in final]):
                    return envelopes_of(final)
        time.sleep(poll)


def nowhere(client: redis.Redis, job_ids: Iterable[str], queue: str) -> bool:
    """None of these jobs has a message left in Redis: not queued, not unacknowledged
    (a worker that holds one for a retry countdown keeps it in ``unacked``)."""
    ids = set(job_ids)
    queued = {_task_id(raw) for raw in client.lrange(queue, 0, -1)}
    unacked = {_task_id(raw) for raw in client.hvals("unacked")}
    return not (ids & queued or ids & unacked)


def applied_writes_by_job(writes_applied_by_key: Mapping[str, int]) -> Counter[str]:
    """Applied (not replayed) Stripe writes per job, over all its key generations."""
    counts: Counter[str] = Counter()
    for key, count in writes_applied_by_key.items():
        match = _JOB_KEY.match(key)
        if match:
            counts[match["job"]] += int(count)
    return counts


def _task_id(raw: bytes | str) -> str | None:
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    if isinstance(message, list):  # the unacked hash holds [message, exchange, routing key]
        message = message[0]
    headers = message.get("headers") if isinstance(message, dict) else None
    return str(headers.get("id")) if isinstance(headers, dict) else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def locate_jobs(client: redis.Redis, job_ids: Iterable[str], queue: str) -> dict[str, str]:
    """Where each job is in Redis (for a report on lost jobs): its result's state,
    whether its message waits in the queue or sits unacknowledged, its retry state."""
    ids = list(job_ids)
    queued = {_task_id(raw) for raw in client.lrange(queue, 0, -1)}
    unacked = {_task_id(raw) for raw in client.hvals("unacked")}
    where: dict[str, str] = {}
    for job_id in ids:
        raw = client.get(RESULT_KEY_PREFIX + job_id)
        state = json.loads(raw).get("status") if raw else None
        retry_state = client.hgetall(f"cards:jobstate:{job_id}")
        where[job_id] = (
            f"result={state} queued={job_id in queued} unacked={job_id in unacked} "
            f"jobstate={ {_text(k): _text(v) for k, v in retry_state.items()} }"
        )
    return where

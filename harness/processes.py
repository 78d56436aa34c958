"""Real processes for tests, benchmarks and the demo: a private Redis and ``celery worker``s.

Both are started exactly as an operator would (``redis-server …``,
``celery -A worker worker -l info …``), on loopback, on free ports, and waited
for by condition (a PING answer, the worker's "ready." line) with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import redis
from celery import Celery

from cards.messaging import celery_app
from cards.rabbitmq import is_amqp
from cards.redis_urls import celery_url_config
from cards.settings import get_settings

__all__ = [
    "BULK_POOL",
    "REPO_ROOT",
    "CeleryWorker",
    "RedisServer",
    "TlsFiles",
    "client_app",
    "free_port",
    "gone",
    "in_parallel",
    "run_bounded",
    "run_redis",
    "run_worker",
    "wait_for",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POLL_SECONDS = 0.05
#: How bulk workers are started (README, Running migrations): a batch is CPU work
#: spread over its own row threads, so they keep one process per core.
BULK_POOL = ("-P", "prefork")


T = TypeVar("T")


def run_bounded(
    command: Sequence[str], *, timeout: float, **options: object
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(command, capture_output=True, text=True, timeout=...)``, in a
    process group of its own: past ``timeout`` the whole group is killed (a benchmark's
    Redis, emulator and workers with it, not left to load the tests after), then
    :class:`subprocess.TimeoutExpired` as ``subprocess.run`` raises it."""
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **options,  # type: ignore[call-overload]
    ) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as expired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            raise subprocess.TimeoutExpired(command, timeout, out, err) from expired
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def in_parallel(actions: Sequence[Callable[[], T]]) -> list[T]:
    """Each action in a thread of its own (a process boot takes seconds); their results
    in order, or, once every action has ended, the first error."""
    results: list[T | None] = [None] * len(actions)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = actions[index]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(actions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]  # every slot filled: no error


def client_app(broker_url: str, backend_url: str | None = None) -> Celery:
    """A producer-side Celery app with the project's configuration, on another broker
    (``redis://``, ``sentinel://``, or ``amqp://`` with a Redis ``backend_url``)."""
    app = celery_app("cards-client")
    urls = celery_url_config(broker_url, backend_url or broker_url, get_settings().sentinel_master)
    # Our Redis transport's options mean nothing to py-amqp: an AMQP broker gets its own.
    merged = (
        ("result_backend_transport_options",)
        if is_amqp(broker_url)
        else (
            "broker_transport_options",
            "result_backend_transport_options",
        )
    )
    for options in merged:
        urls[options] = {**app.conf[options], **urls[options]}
    app.conf.update(urls)
    return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail the test with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL_SECONDS)


@dataclass(frozen=True)
class TlsFiles:
    """A server key and certificate; the certificate is also the clients' CA."""

    key: Path
    cert: Path


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]
    password: str | None = None
    tls: TlsFiles | None = None

    def url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls is None:
            return f"redis://{auth}127.0.0.1:{self.port}/{db}"
        return (
            f"rediss://{auth}127.0.0.1:{self.port}/{db}"
            f"?ssl_cert_reqs=required&ssl_ca_certs={self.tls.cert}"
        )

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis.from_url(self.url(db), socket_timeout=1)


def _answers_ping(server: RedisServer) -> bool:
    try:
        return bool(server.client().ping())
    except redis.RedisError:
        return False


@contextmanager
def run_redis(
    extra_args: tuple[str, ...] = (),
    *,
    password: str | None = None,
    tls: TlsFiles | None = None,
) -> Iterator[RedisServer]:
    """A private redis-server on a free port, with a password and TLS if asked."""
    port = free_port()
    listen = ["--port", str(port)]
    if tls is not None:
        listen = ["--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no"]
        listen += ["--tls-cert-file", str(tls.cert), "--tls-key-file", str(tls.key)]
        listen += ["--tls-ca-cert-file", str(tls.cert)]
    if password is not None:
        listen += ["--requirepass", password]
    process = subprocess.Popen(
        [
            "redis-server",
            *listen,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            *extra_args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = RedisServer(port, process, password, tls)
    try:
        wait_for(lambda: _answers_ping(server), 10, f"redis-server on port {port}")
        yield server
    finally:
        process.terminate()
        process.wait(10)


@dataclass
class CeleryWorker:
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children), as a crash would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 20) -> None:
        """A warm shutdown, as a deploy does it: SIGTERM to the main process only,
        which lets running jobs finish and puts waiting ones back on the queue."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


def gone(pid: int) -> bool:
    """The process no longer runs (a zombie left for its dead parent's reaper counts)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def child_pids(pid: int) -> list[int]:
    """A process's direct children, whichever of its threads started them (a pool's
    processes, the sibling worker processes of worker.siblings)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children += [int(child) for child in task.read_text().split()]
        except OSError:
            continue
    return sorted(children)


def nodes_of(log: str, name: str) -> list[str]:
    """The node names of a worker started as ``-n name@…``: its main process's and
    those of the sibling processes it logs that it starts (worker.siblings)."""
    main = re.search(rf"\b({re.escape(name)}@\S+) ready\.", log)
    siblings = re.search(rf"worker processes: {re.escape(name)}@\S+ and (.+)", log)
    nodes = [main.group(1) if main else f"{name}@"]
    return nodes + ([n.strip() for n in siblings.group(1).split(",")] if siblings else [])


@contextmanager
def run_worker(
    env: Mapping[str, str],
    log_path: Path,
    *,
    concurrency: int | None = None,
    name: str = "w1",
    extra_args: tuple[str, ...] = (),
) -> Iterator[CeleryWorker]:
    worker = start_worker(env, log_path, concurrency=concurrency, name=name, extra_args=extra_args)
    try:
        yield worker
    finally:
        worker.stop()


def start_worker(
    env: Mapping[str, str],
    log_path: Path,
    *,
    concurrency: int | None = None,
    name: str = "w1",
    extra_args: tuple[str, ...] = (),
    app_module: str = "worker",
    tree: Path = REPO_ROOT,
) -> CeleryWorker:
    """Start ``celery -A <app_module> worker -l info`` and wait until it says it is ready.

    ``concurrency=None`` passes no ``-c``: the pool and its size are the app's
    configured defaults, as with the plain documented command. ``tree``: the source
    tree the worker runs (another checkout, to compare two versions in one run)."""
    size = ["-c", str(concurrency)] if concurrency is not None else []
    offset = log_path.stat().st_size if log_path.exists() else 0
    log_file = log_path.open("ab")
    process = subprocess.Popen(
        [
            str(BIN / "celery"),
            "-A",
            app_module,
            "worker",
            "-l",
            "info",
            *size,
            "-n",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
            *extra_args,
        ],
        cwd=tree,
        env={**os.environ, **env, **({"PYTHONPATH": str(tree)} if tree != REPO_ROOT else {})},
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log_file.close()
    worker = CeleryWorker(process, log_path)

    def ready() -> bool:
        if not worker.alive:
            raise RuntimeError(f"celery worker exited early:\n{worker.log[-3000:]}")
        since_start = worker.log_path.read_bytes()[offset:].decode(errors="replace")
        return all(f"{node} ready." in since_start for node in nodes_of(since_start, name))

    wait_for(ready, 60, f"celery worker {name} to be ready")
    return worker

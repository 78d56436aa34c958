"""More threads-pool worker processes from the plain command: one per core by default.

Once set up, a threads-pool ``celery worker`` started as a command (the main
process) starts ``CARDS_WORKER_PROCESSES`` - 1 siblings: the same command line with
node names ``name-2@host``, … and no pidfile or detach, each in its own process
group. A sibling dies with the main process (``PR_SET_PDEATHSIG``, SIGKILL) and never
starts siblings or serves HTTP. The main process forwards its warm or cold shutdown to
every sibling and returns from its own only once all have exited; a sibling killed or
failing meanwhile is restarted with backoff, and ``/readyz`` fails until it runs again.
Decisions are pure (:func:`process_count`, :func:`sibling_argv`, …); details: docs/worker.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from celery import signals
from celery.utils.sysinfo import cpu_budget  # type: ignore[attr-defined]  # celery >= 5.7

from cards.settings import get_settings
from worker.metrics import count_in_files
from worker.probes import HEALTH

__all__ = [
    "SIBLING_ENV",
    "Siblings",
    "down_problem",
    "exit_note",
    "is_sibling",
    "main_pid_of",
    "process_count",
    "restart_delay",
    "restarts",
    "shutdown_signal",
    "sibling_argv",
    "sibling_nodename",
]

logger = logging.getLogger(__name__)

#: Set in a sibling's environment: its main process's pid.
SIBLING_ENV: Final = "CARDS_WORKER_SIBLING_OF"
#: Options of the main command a sibling must not repeat (it gets its own node name).
_VALUED = ("-n", "--hostname", "--pidfile")
#: ``--purge`` too: a sibling purging later would drop jobs sent since the main's purge.
_FLAGS = ("-D", "--detach", "--purge", "--discard")
PR_SET_PDEATHSIG: Final = 1
RESTART_DELAYS: Final = (1.0, 2.0, 5.0, 10.0, 30.0)
#: A sibling that ran this long before dying restarts after the shortest delay again.
STABLE_SECONDS: Final = 60.0


def process_count(setting: int, cpus: int) -> int:
    """Worker processes of one command: the setting, or one per CPU when it is 0. (Pure.)"""
    return setting if setting > 0 else max(1, cpus)


def sibling_nodename(nodename: str, index: int) -> str:
    """``name@host`` -> ``name-<index>@host``. (Pure.)"""
    name, at, host = nodename.partition("@")
    return f"{name}-{index}{at}{host}"


def sibling_argv(argv: Sequence[str], nodename: str) -> list[str]:
    """The main command's arguments for a sibling: its own node name, no pidfile, no
    detach (its supervisor waits for it). ``argv`` has no program name. (Pure.)"""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in _VALUED:
            skip = True
            continue
        if arg in _FLAGS or arg.startswith(tuple(f"{o}=" for o in _VALUED[1:])):
            continue
        if arg.startswith("-n") and not arg.startswith("--"):
            continue
        kept.append(arg)
    return [*kept, f"--hostname={nodename}"]


def shutdown_signal(how: str) -> signal.Signals:
    """The signal that starts a sibling's shutdown of the same kind as the main's. (Pure.)"""
    return signal.SIGTERM if how == "Warm" else signal.SIGQUIT


def restart_delay(failures: int) -> float:
    """Seconds before restarting a sibling after its ``failures``-th death in a row. (Pure.)"""
    return RESTART_DELAYS[min(max(failures, 1), len(RESTART_DELAYS)) - 1]


def restarts(code: int | None) -> bool:
    """Restart a sibling that exited by itself with this code? Not after a clean exit
    (a remote ``shutdown`` or a signal sent to it alone: someone meant it). (Pure.)"""
    return code != 0


def exit_note(code: int | None) -> str:
    """What a sibling's exit code says. (Pure.)"""
    if code is None:
        return "not started yet"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def down_problem(nodename: str, code: int | None) -> str:
    """Readiness's reason while a sibling does not run (the main process does not stop). (Pure.)"""
    then = "restarting" if restarts(code) else "not restarted"
    return f"worker process {nodename} is not running ({exit_note(code)}); {then}"


def main_pid_of(environ: Mapping[str, str]) -> int | None:
    """The main process's pid if this process was started as its sibling. (Pure.)"""
    value = environ.get(SIBLING_ENV, "")
    return int(value) if value.isdigit() and int(value) > 1 else None


def is_sibling(environ: Mapping[str, str] = os.environ) -> bool:
    return main_pid_of(environ) is not None


@dataclass
class _Child:
    index: int
    nodename: str
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    signalled: set[signal.Signals] = field(default_factory=set)


class Siblings:
    """Starts, restarts and stops the sibling processes of this (main) worker process.

    Each sibling is started and waited for by a thread of its own that lives as long
    as the sibling: ``PR_SET_PDEATHSIG`` fires when the *thread* that forked exits."""

    def __init__(self, commands: Sequence[tuple[str, list[str]]], env: Mapping[str, str]) -> None:
        self._children = [
            _Child(index, nodename, command)
            for index, (nodename, command) in enumerate(commands, start=2)
        ]
        self._env = dict(env)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def nodenames(self) -> list[str]:
        return [child.nodename for child in self._children]

    def start(self) -> None:
        for child in self._children:
            name = f"cards-{child.nodename}"
            thread = threading.Thread(target=self._keep_running, args=(child,), name=name)
            thread.daemon = True
            self._threads.append(thread)
            thread.start()

    def problem(self) -> str | None:
        """Why this worker is not whole (a sibling not running); None if it is."""
        with self._lock:
            down = [c for c in self._children if c.process is None or c.process.poll() is not None]
        if not down or self._stopping.is_set():
            return None
        return "; ".join(
            down_problem(c.nodename, c.process.returncode if c.process else None) for c in down
        )

    def forward(self, how: str) -> None:
        """Start the same kind of shutdown in every sibling (each signal once)."""
        self._stopping.set()
        sig = shutdown_signal(how)
        with self._lock:
            for child in self._children:
                process = child.process
                if process is None or process.poll() is not None or sig in child.signalled:
                    continue
                child.signalled.add(sig)
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)

    def stop(self) -> None:
        """Warm-stop every sibling (unless a shutdown was already forwarded); wait for all."""
        if not self._stopping.is_set():
            self.forward("Warm")
        self._stopping.set()
        for thread in self._threads:
            thread.join()

    def _keep_running(self, child: _Child) -> None:
        failures = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            with self._lock:
                if self._stopping.is_set():
                    return
                # The main process's own command line, with a node name of the sibling's.
                child.process = subprocess.Popen(  # noqa: S603
                    child.command, env=self._env, process_group=0, close_fds=True
                )
                child.signalled = set()
            code = child.process.wait()
            _forget_metrics_of(child.process.pid)
            if self._stopping.is_set() or not restarts(code):
                level = logging.INFO if self._stopping.is_set() else logging.ERROR
                logger.log(level, "worker process %s: %s", child.nodename, exit_note(code))
                return
            failures = 1 if time.monotonic() - started > STABLE_SECONDS else failures + 1
            delay = restart_delay(failures)
            logger.error(
                "worker process %s: %s; restarting in %.0f s",
                child.nodename,
                exit_note(code),
                delay,
            )
            self._stopping.wait(delay)


def _forget_metrics_of(pid: int) -> None:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _die_with_main_process(main_pid: int) -> None:
    """In a sibling: SIGKILL this process when the main process dies (Linux), or watch."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):

        def watch() -> None:
            while os.getppid() == main_pid:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, name="cards-parent-watch", daemon=True).start()
    if os.getppid() != main_pid:  # it died before prctl took effect
        os.write(
            2,
            f"worker: {SIBLING_ENV}={main_pid} but the parent is {os.getppid()}: "
            "a sibling worker process whose main process is gone stops\n".encode(),
        )
        os.kill(os.getpid(), signal.SIGKILL)


#: This main process's siblings, while it runs some.
RUNNING: Siblings | None = None


def _runs_threads_from_the_command(sender: Any) -> bool:
    """A ``celery worker`` command's main process (not an embedded test worker) on threads."""
    from celery.apps.worker import Worker as CommandWorker

    pool = getattr(sender, "pool_cls", None)
    name = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    return isinstance(sender, CommandWorker) and "thread" in str(name) and "worker" in sys.argv[1:]


@signals.worker_init.connect
def _die_with_main(**_: Any) -> None:
    main_pid = main_pid_of(os.environ)
    if main_pid is not None:
        _die_with_main_process(main_pid)


@signals.celeryd_after_setup.connect
def _start_siblings(instance: Any = None, **_: Any) -> None:
    """In the main process, once its pool is chosen and its log set up, before it consumes."""
    global RUNNING
    if is_sibling() or not _runs_threads_from_the_command(instance):
        return
    settings = get_settings()
    count = process_count(settings.worker_processes, cpu_budget(use_cgroup_quota=True).count)
    if count < 2:
        return
    if settings.metrics_port:
        count_in_files()  # done at worker_init already; the siblings count in its directory
    commands = []
    for index in range(2, count + 1):
        nodename = sibling_nodename(str(instance.hostname), index)
        argv = sibling_argv(sys.argv[1:], nodename)
        commands.append((nodename, [sys.executable, "-m", "celery", *argv]))
    RUNNING = Siblings(commands, {**os.environ, SIBLING_ENV: str(os.getpid())})
    HEALTH.watch_siblings(RUNNING.problem)
    logger.info("worker processes: %s and %s", instance.hostname, ", ".join(RUNNING.nodenames))
    RUNNING.start()


@signals.worker_shutting_down.connect
def _forward_shutdown(how: str = "Warm", **_: Any) -> None:
    if RUNNING is not None:
        RUNNING.forward(how)


@signals.worker_shutdown.connect
def _wait_for_siblings(**_: Any) -> None:
    if RUNNING is not None:
        logger.info("waiting for worker processes %s to exit", ", ".join(RUNNING.nodenames))
        RUNNING.stop()

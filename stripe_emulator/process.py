"""Start the emulator as a subprocess for tests, benchmarks and demos.

:func:`run_emulator` launches ``python -m stripe_emulator --host 127.0.0.1 --port 0 ...``,
waits (up to ``startup_timeout`` seconds) for its ``STRIPE_EMULATOR_READY <url>`` line,
and on exit sends SIGTERM, then SIGKILL if it has not exited within ``stop_timeout``.
A daemon thread keeps draining the child's stdout so it can never block on a full pipe.
The child's stderr is inherited unless ``stderr`` says otherwise. Example:
``docs/emulator.md``.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from . import READY_PREFIX
from .admin_client import EmulatorAdmin

DEFAULT_STARTUP_TIMEOUT_SECONDS = 15.0
DEFAULT_STOP_TIMEOUT_SECONDS = 5.0


class EmulatorStartError(RuntimeError):
    """The emulator exited or stayed silent before announcing readiness."""


@dataclass
class EmulatorProcess:
    url: str
    popen: subprocess.Popen[str]
    admin: EmulatorAdmin
    stop_timeout: float = DEFAULT_STOP_TIMEOUT_SECONDS
    output: list[str] = field(default_factory=list)
    """Lines the child printed on stdout (normally only the ready line)."""

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after ``stop_timeout``; returns the exit code."""
        self.admin.close()
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def build_command(
    *,
    port: int = 0,
    latency_ms: float = 0,
    jitter_ms: float = 0,
    api_key: str | None = None,
    seed: int | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "stripe_emulator",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if latency_ms:
        cmd += ["--latency-ms", str(latency_ms)]
    if jitter_ms:
        cmd += ["--jitter-ms", str(jitter_ms)]
    if api_key is not None:
        cmd += ["--api-key", api_key]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    cmd += list(extra_args)
    return cmd


def _drain(stream: IO[str], lines: queue.Queue[str | None], keep: list[str]) -> None:
    for line in stream:
        keep.append(line.rstrip("\n"))
        lines.put(line)
    lines.put(None)


@contextmanager
def run_emulator(
    *,
    port: int = 0,
    latency_ms: float = 0,
    jitter_ms: float = 0,
    api_key: str | None = None,
    seed: int | None = None,
    extra_args: Sequence[str] = (),
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_SECONDS,
    stop_timeout: float = DEFAULT_STOP_TIMEOUT_SECONDS,
    env: Mapping[str, str] | None = None,
    stderr: Any = None,
) -> Iterator[EmulatorProcess]:
    """Run an emulator subprocess for the duration of the ``with`` block."""
    cmd = build_command(
        port=port,
        latency_ms=latency_ms,
        jitter_ms=jitter_ms,
        api_key=api_key,
        seed=seed,
        extra_args=extra_args,
    )
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    popen = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=child_env,
    )
    assert popen.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    kept: list[str] = []
    threading.Thread(
        target=_drain, args=(popen.stdout, lines, kept), name="stripe-emulator-stdout", daemon=True
    ).start()
    proc: EmulatorProcess | None = None
    try:
        url = _await_ready(popen, lines, startup_timeout)
        proc = EmulatorProcess(
            url=url, popen=popen, admin=EmulatorAdmin(url), stop_timeout=stop_timeout, output=kept
        )
        yield proc
    finally:
        if proc is not None:
            proc.stop()
        elif popen.poll() is None:
            popen.kill()
            popen.wait()


def _await_ready(
    popen: subprocess.Popen[str], lines: queue.Queue[str | None], timeout: float
) -> str:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise EmulatorStartError(f"stripe emulator not ready after {timeout:.1f}s")
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        if line is None:
            code = popen.wait()
            raise EmulatorStartError(f"stripe emulator exited with code {code} before ready")
        if line.startswith(READY_PREFIX):
            return line.split(None, 1)[1].strip()

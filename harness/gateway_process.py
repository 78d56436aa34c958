"""The HTTP gateway as a real process: ``cards gateway --port N`` on loopback.

Started exactly as an operator would, on a free port, and waited for by
condition (``/healthz`` answers 200) with a deadline; stopped with SIGTERM,
which uvicorn turns into a graceful shutdown.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from harness.processes import BIN, REPO_ROOT, free_port, wait_for

__all__ = ["GatewayProcess", "run_gateway"]

STARTUP_TIMEOUT_SECONDS = 90
STOP_TIMEOUT_SECONDS = 10


@dataclass
class GatewayProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_SECONDS)


def _healthy(gateway: GatewayProcess) -> bool:
    if gateway.process.poll() is not None:
        raise RuntimeError(f"cards gateway exited early:\n{gateway.log[-3000:]}")
    try:
        return httpx.get(f"{gateway.url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def run_gateway(
    env: Mapping[str, str],
    log_path: Path,
    *,
    extra_args: tuple[str, ...] = (),
    workers: int | None = 1,
    tree: Path = REPO_ROOT,
) -> Iterator[GatewayProcess]:
    """``cards gateway`` on 127.0.0.1 and a free port, with ``env`` over this environment,
    in ``workers`` processes (None: no ``--workers``, the command's default). ``tree``:
    the source tree it runs (another checkout, to compare two versions in one run)."""
    processes = () if workers is None else ("--workers", str(workers))
    port = free_port()
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [
                str(BIN / "cards"),
                "gateway",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *processes,
                *extra_args,
            ],
            cwd=tree,
            env={**os.environ, **env, **({"PYTHONPATH": str(tree)} if tree != REPO_ROOT else {})},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    gateway = GatewayProcess(f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_for(lambda: _healthy(gateway), STARTUP_TIMEOUT_SECONDS, "cards gateway to be healthy")
        yield gateway
    finally:
        gateway.stop()

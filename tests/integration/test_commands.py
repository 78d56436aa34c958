"""The README's commands run: `make run`'s demo and the benchmark at smoke size.

These prove the commands work end to end; the benchmark's figures are not
asserted here (timings belong in BENCHMARKS.md, not in tests).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from harness.processes import BIN, REPO_ROOT


def run_module(
    *args: str, timeout: float = 240, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "python"), "-m", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_demo_prints_an_envelope_for_every_sample_job() -> None:
    done = run_module("harness.demo")
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.count("\n=== ") >= 8
    assert '"message": "Método de pago actualizado con éxito"' in out
    assert '"message": "no such customer"' in out
    assert '"message": "card is not attached to this customer; assign it first"' in out
    assert "refused by the producer, nothing enqueued" in out
    assert "stopped the worker, the emulator and the broker." in out
    assert "Traceback" not in out + done.stderr


def test_demo_falls_back_to_fakeredis_without_redis_server(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}
    env["PATH"] = str(tmp_path)  # an empty directory: no redis-server to be found
    done = run_module("harness.demo", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "broker: fakeredis TCP server" in done.stdout
    assert '"message": "Método de pago actualizado con éxito"' in done.stdout


def test_e2e_benchmark_runs_at_smoke_size() -> None:
    done = run_module("bench.e2e", "--jobs", "20", "--runs", "1", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert {r["side"] for r in figures["runs"]} == {"ours", "baseline"}
    assert all(r["ok"] == r["jobs"] == 20 for r in figures["runs"])

"""The README's commands run: `make run`'s demo (and `make run-rabbitmq`'s) and the
benchmark at smoke size.

These prove the commands work end to end; the benchmark's figures are not
asserted here (timings belong in BENCHMARKS.md, not in tests).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import redis

from harness.demo import redis as redis_url
from harness.processes import BIN, REPO_ROOT, run_bounded


def run_module(
    *args: str, timeout: float = 240, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_bounded([str(BIN / "python"), "-m", *args], cwd=REPO_ROOT, timeout=timeout, env=env)


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


@pytest.mark.rabbitmq
def test_make_run_rabbitmq_runs_the_demo_on_a_private_rabbitmq_node() -> None:
    # Not on the shared node: it boots a node of its own, as `make run-rabbitmq`
    # does, so it may run beside the tests that share the session's node.
    makefile = (REPO_ROOT / "Makefile").read_text()
    recipe = makefile.split("\nrun-rabbitmq: venv\n", 1)[1].split("\n", 1)[0]
    assert recipe == "\t$(BIN)/python -m harness.demo --broker rabbitmq"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
    done = run_module("harness.demo", "--broker", "rabbitmq", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "broker: a private RabbitMQ node on 127.0.0.1:" in out
    assert "results and job state: redis-server on 127.0.0.1:" in out
    assert out.count("\n=== ") >= 8
    assert '"message": "Método de pago actualizado con éxito"' in out
    assert "Traceback" not in out + done.stderr


def test_demo_falls_back_to_fakeredis_without_redis_server(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}
    env["PATH"] = str(tmp_path)  # an empty directory: no redis-server to be found
    done = run_module("harness.demo", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "broker: fakeredis TCP server" in done.stdout
    assert '"message": "Método de pago actualizado con éxito"' in done.stdout


def test_the_demos_fakeredis_keeps_a_connection_after_an_error_reply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every script runs by EVALSHA first, answered NOSCRIPT once per script: a server
    # that then closed the connection (fakeredis before 2.41) failed the demo's jobs
    # now and then, on whichever client had no retry left.
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server: the fallback
    with redis_url("broker") as url:
        client = redis.Redis.from_url(url, single_connection_client=True, retry=None)
        with pytest.raises(redis.exceptions.NoScriptError):
            client.evalsha("0" * 40, 0)
        assert client.ping() is True  # the same connection, still served
        client.close()


def test_e2e_benchmark_runs_at_smoke_size() -> None:
    done = run_module("bench.e2e", "--jobs", "20", "--runs", "1", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert {r["side"] for r in figures["runs"]} == {"ours", "baseline"}
    assert all(r["ok"] == r["jobs"] == 20 for r in figures["runs"])

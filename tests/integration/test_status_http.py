"""A real worker's HTTP server: /livez and /readyz follow its consumer and its Stripe
breaker, and /metrics shows what waits in Redis (queue depth and age, unacked, dead
letters, migrations) beside the pool's counters."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from harness.processes import RedisServer, client_app, free_port, start_worker, wait_for
from producers import enqueue_set_default_card, get_result
from stripe_emulator.process import run_emulator
from tests.integration.conftest import API_KEY, worker_env
from tests.integration.test_observability import sample, scrape
from tests.unit.test_compose import COMPOSE

STATUS_DB = 15


def status(port: int, path: str) -> int:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5, trust_env=False).status_code


def compose_healthcheck(port: int) -> subprocess.CompletedProcess[bytes]:
    """docker-compose.yml's worker healthcheck, run here against ``port``."""
    service = yaml.safe_load(COMPOSE.read_text())["services"]["worker"]
    kind, *command = service["healthcheck"]["test"]
    assert kind == "CMD" and command[0] == "python"
    script = command[-1].replace(service["environment"]["CARDS_METRICS_PORT"], str(port))
    return subprocess.run([sys.executable, *command[1:-1], script], capture_output=True)


#: The configured default (threads) and Celery's prefork: the probes live in the main
#: process either way, and must not depend on where the jobs run.
POOLS = {"default": (), "prefork": ("-P", "prefork", "-c", "2")}


@pytest.mark.parametrize("pool", POOLS)
def test_probes_and_broker_metrics_of_a_real_worker(
    redis_server: RedisServer, logs_dir: Path, pool: str
) -> None:
    url = redis_server.url(STATUS_DB)
    redis.Redis.from_url(url).flushdb()
    stripe_port, port = free_port(), free_port()
    base = f"http://127.0.0.1:{stripe_port}"  # no Stripe yet: the breaker opens
    env = worker_env(url, base, CARDS_BREAKER_PROBE_SECONDS="0.5", CARDS_METRICS_PORT=str(port))
    log = logs_dir / f"status-http-{pool}.log"
    worker = start_worker(env, log, name=f"status-{pool}", extra_args=POOLS[pool])
    app = client_app(url)
    try:
        wait_for(lambda: "stripe breaker open" in log.read_text(), 30, "the breaker to open")
        assert status(port, "/livez") == 200
        assert status(port, "/readyz") == 503
        assert "breaker is open" in httpx.get(f"http://127.0.0.1:{port}/readyz").text
        assert compose_healthcheck(port).returncode != 0

        two_minutes_ago = datetime.now(UTC) - timedelta(minutes=2)
        queued = [
            enqueue_set_default_card(
                f"cus_Status{n}", f"card_1Status{n}", requested_at=two_minutes_ago, app=app
            )
            for n in range(3)
        ]
        samples = scrape(port)
        assert sample(samples, "cards_broker_state_up") == 1
        assert sample(samples, "cards_queue_depth", queue="cards") == 3
        assert sample(samples, "cards_queue_depth", queue="cards.bulk") == 0
        assert sample(samples, "cards_queue_oldest_age_seconds", queue="cards") >= 120
        assert sample(samples, "cards_unacked_messages") == 0
        assert sample(samples, "cards_dead_letters") == 0
        assert sample(samples, "cards_migrations", state="running") == 0
        assert sample(samples, "cards_stripe_breaker_open") == 1

        with run_emulator(api_key=API_KEY, port=stripe_port):
            wait_for(lambda: status(port, "/readyz") == 200, 30, "the worker to be ready")
            assert compose_healthcheck(port).returncode == 0
            for job_id in queued:
                assert get_result(job_id, timeout=30, app=app)["message"] == "no such customer"
            wait_for(
                lambda: sample(scrape(port), "cards_queue_depth", queue="cards") == 0,
                10,
                "the queue to drain",
            )
            assert status(port, "/livez") == 200
    finally:
        worker.stop()
    # The main process is gone, and its HTTP server with it.
    try:
        status(port, "/livez")
    except httpx.TransportError:
        pass
    else:
        raise AssertionError("the status server outlived its worker")

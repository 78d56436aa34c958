"""The gateway's waits by push, its in-flight cap, readiness, processes and access log, for real.

A ``cards gateway`` whose queue no worker reads: the test plays the worker,
storing each result in the real result backend (which publishes it) while the
request waits. Redis's MONITOR shows which commands the gateway sent, so "no
polling" is what Redis saw, not a timing. The README's process commands run as
printed (through a shell, ``PORT`` set to a free port).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx
import pytest
import redis

from cards.envelope import SUCCESS_MESSAGE
from cards.results import ResultBackend
from harness.gateway_process import GatewayProcess, run_gateway
from harness.processes import BIN, REPO_ROOT, RedisServer, client_app, free_port, wait_for
from producers.http.result_feed import CLIENT_NAME
from stripe_emulator.process import EmulatorProcess
from tests.integration.test_gateway import AUTH, KEY, gateway_env

DB = 14
CAP = 2
CLIENT_TIMEOUT = 20  # well under the wait asked for: an answer must not be the deadline's
WAIT = 60
ENVELOPE = {"status": True, "message": SUCCESS_MESSAGE, "data": {"id": "cus_A1"}}


@pytest.fixture(scope="module")
def gateway(
    redis_server: RedisServer, emulator: EmulatorProcess, logs_dir: Path
) -> Iterator[GatewayProcess]:
    env = gateway_env(
        redis_server.url(DB),
        emulator.url,
        CARDS_GATEWAY_MAX_IN_FLIGHT=str(CAP),
        CARDS_GATEWAY_MAX_WAIT_SECONDS=str(WAIT),
    )
    with run_gateway(env, logs_dir / "gateway-scaling.log") as process:
        yield process


class Monitor:
    """Every command Redis runs, from Redis's MONITOR, on a thread."""

    def __init__(self, client: redis.Redis) -> None:
        self.commands: list[str] = []
        self._client = client  # the monitor's connection lives as long as its client
        self._monitor = client.monitor()  # type: ignore[no-untyped-call]
        self._monitor.__enter__()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        try:
            for command in self._monitor.listen():
                self.commands.append(str(command["command"]))
        except (redis.RedisError, OSError, ValueError):
            return

    def count(self, command: str) -> int:
        return sum(1 for seen in list(self.commands) if seen == command)

    def close(self) -> None:
        self._monitor.connection.disconnect()


@pytest.fixture
def monitor(redis_server: RedisServer) -> Iterator[Monitor]:
    watching = Monitor(redis.Redis.from_url(redis_server.url()))  # no read timeout
    try:
        yield watching
    finally:
        watching.close()


def post(gateway: GatewayProcess, job_id: str, wait: float) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/api/cards/default?wait={wait:g}",
        json={"userId": "cus_A1", "default_source": "card_B2", "job_id": job_id},
        headers=AUTH,
        timeout=CLIENT_TIMEOUT,
    )


def key(job_id: str) -> str:
    return f"celery-task-meta-{job_id}"


def subscribers(redis_server: RedisServer, job_id: str) -> int:
    counts = redis_server.client(DB).pubsub_numsub(key(job_id))
    return int(counts[0][1])


def subscribed(redis_server: RedisServer, job_id: str) -> bool:
    return subscribers(redis_server, job_id) == 1


def store(redis_server: RedisServer, job_id: str, *, publish: bool = True) -> None:
    """Play the worker: the job's envelope in the result backend (published, or not)."""
    redis_server.client(DB).delete("cards")
    if publish:
        # As the worker stores it (SET and PUBLISH), without a GET of its own.
        ResultBackend(client_app(redis_server.url(DB))).store_many({job_id: ENVELOPE})
        return
    meta: dict[str, object] = {
        "status": "SUCCESS",
        "result": ENVELOPE,
        "traceback": None,
        "children": [],
    }
    redis_server.client(DB).set(key(job_id), json.dumps({**meta, "task_id": job_id}))


def test_a_waiter_is_woken_by_the_published_result_without_polling(
    gateway: GatewayProcess, redis_server: RedisServer, monitor: Monitor
) -> None:
    job_id = "push-woken-1"
    get = f"GET {key(job_id)}"
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(post, gateway, job_id, WAIT)
        wait_for(lambda: subscribers(redis_server, job_id) == 1, 20, "the gateway to subscribe")
        # Two reads of the key: the send's check of the job id, then the one after subscribing.
        wait_for(lambda: monitor.count(get) >= 2, 20, "the read after subscribing")
        store(redis_server, job_id)
        response = answer.result()
    assert response.status_code == 200, response.text
    assert response.json() == ENVELOPE
    assert monitor.count(get) == 2  # nothing polled the key while the job ran
    wait_for(lambda: subscribers(redis_server, job_id) == 0, 20, "the gateway to unsubscribe")


def test_a_202_sends_its_message_and_no_subscription(
    gateway: GatewayProcess, monitor: Monitor
) -> None:
    job_ids = [f"push-202-{n}" for n in range(3)]
    for job_id in job_ids:
        assert post(gateway, job_id, 0).status_code == 202

    def claims_marked_sent() -> bool:  # MONITOR's stream may lag the answers
        commands = list(monitor.commands)
        # The claim and its "sent" mark: two SETs of the job's claim key each.
        return all(sum(c.startswith("SET") and j in c for c in commands) == 2 for j in job_ids)

    wait_for(claims_marked_sent, 20, "the claims and their marks")
    commands = list(monitor.commands)
    assert sum(c.startswith("LPUSH") and "push-202-" in c for c in commands) == 3
    assert not [c for c in commands if "SUBSCRIBE" in c and "push-202-" in c]


def test_a_result_stored_before_the_wait_subscribes_is_answered(
    gateway: GatewayProcess, redis_server: RedisServer
) -> None:
    job_id = "push-already-1"
    assert post(gateway, job_id, 0).status_code == 202
    store(redis_server, job_id)  # published while nobody listens
    response = post(gateway, job_id, WAIT)  # the same job again, waiting
    assert response.status_code == 200, response.text
    assert response.json() == ENVELOPE


def test_losing_the_subscriber_falls_back_to_reading_the_key(
    gateway: GatewayProcess, redis_server: RedisServer, monitor: Monitor
) -> None:
    job_id = "push-lost-1"
    client = redis_server.client()
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(post, gateway, job_id, WAIT)
        wait_for(lambda: subscribers(redis_server, job_id) == 1, 20, "the gateway to subscribe")
        wait_for(lambda: monitor.count(f"GET {key(job_id)}") >= 2, 20, "its read")
        store(redis_server, job_id, publish=False)  # a result whose message never came
        feeds = [
            c
            for c in client.client_list()
            if c.get("name") == CLIENT_NAME and "P" in c.get("flags", "")
        ]
        assert len(feeds) == 1  # one subscriber connection for the process
        client.client_kill_filter(_id=feeds[0]["id"])
        response = answer.result()
    assert response.status_code == 200, response.text
    assert response.json() == ENVELOPE
    assert "result feed: subscriber connection lost" in gateway.log
    wait_for(lambda: "result feed: reconnected" in gateway.log, 20, "the feed to reconnect")


def readiness(gateway: GatewayProcess) -> int:
    return httpx.get(f"{gateway.url}/readyz", timeout=CLIENT_TIMEOUT).status_code


def test_past_the_in_flight_cap_a_request_is_a_503_and_readyz_flips(
    gateway: GatewayProcess, redis_server: RedisServer
) -> None:
    assert readiness(gateway) == 200
    with ThreadPoolExecutor(CAP) as pool:
        held: list[Future[httpx.Response]] = [
            pool.submit(post, gateway, f"push-held-{n}", WAIT) for n in range(CAP)
        ]
        wait_for(lambda: readiness(gateway) == 503, 20, "/readyz to say saturated")
        ready = httpx.get(f"{gateway.url}/readyz").json()
        assert ready == {
            "status": False,
            "message": "saturated",
            "data": {"in_flight": CAP, "max_in_flight": CAP},
        }
        shed = post(gateway, "push-shed-1", WAIT)
        assert shed.status_code == 503
        assert shed.headers["retry-after"] == "1"
        assert shed.json() == {
            "status": False,
            "message": f"the gateway is at capacity ({CAP} requests in flight); retry after 1 s",
            "data": None,
        }
        assert httpx.get(f"{gateway.url}/healthz").status_code == 200  # liveness is not shed
        for job_id in (f"push-held-{n}" for n in range(CAP)):
            wait_for(partial(subscribed, redis_server, job_id), 20, f"{job_id} to wait")
            store(redis_server, job_id)
        assert [f.result().status_code for f in held] == [200] * CAP
    wait_for(lambda: readiness(gateway) == 200, 20, "/readyz to be ready again")
    assert post(gateway, "push-after-1", 0).status_code == 202


def test_access_log_lines_are_json_without_query_strings(gateway: GatewayProcess) -> None:
    secret = "query-string-secret-0123456789"
    httpx.get(f"{gateway.url}/api/jobs/json-log-probe?api_key={secret}", headers=AUTH)
    wait_for(lambda: "/api/jobs/json-log-probe" in gateway.log, 10, "the access log line")
    assert secret not in gateway.log
    line = next(x for x in gateway.log.splitlines() if "/api/jobs/json-log-probe" in x)
    entry = json.loads(line)
    assert set(entry) == {"ts", "method", "path", "status", "ms"}
    assert (entry["method"], entry["path"], entry["status"]) == (
        "GET",
        "/api/jobs/json-log-probe",
        404,
    )


def readme_process_commands() -> list[str]:
    """The README's commands that start the gateway in two processes."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## HTTP gateway", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\S.*--workers 2.*$", section, re.MULTILINE)


@pytest.mark.parametrize("command", readme_process_commands())
def test_the_readmes_two_process_commands_serve_with_the_access_log_off(
    command: str, redis_server: RedisServer, emulator: EmulatorProcess, logs_dir: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        **gateway_env(redis_server.url(DB), emulator.url, CARDS_GATEWAY_ACCESS_LOG="false"),
        "PORT": str(port),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",  # as in an activated venv
    }
    log_path = logs_dir / f"gateway-readme-{command.split()[0]}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, log_path.read_text()
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, 90, f"{command.split()[0]} to be ready")
        answers = [
            httpx.post(
                f"{url}/api/cards/default",
                json={"userId": "cus_A1", "default_source": "card_B2"},
                headers={"Authorization": f"Bearer {KEY}"},
            ).status_code
            for _ in range(6)
        ]
        assert answers == [202] * 6
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
    output = log_path.read_text()
    assert len(set(re.findall(r"Started server process \[(\d+)\]", output))) == 2, output
    assert '"method"' not in output  # the access log is off
    redis_server.client(DB).delete("cards")

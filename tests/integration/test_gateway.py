"""The HTTP gateway for real: ``cards gateway`` (uvicorn) → Redis → celery workers → emulator.

Every status the gateway documents is produced here by the real stack: the
session's worker for success and Stripe's refusals, a worker with a wrong key
(502), a worker with a two-attempt budget (503), emulator latency beyond the
wait (504). The emulator cannot make these calls decline a card, so 402 (and,
for completeness, every other kind) is produced by a stand-in worker that
stores the envelope in the real result backend while the request waits.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from cards.envelope import SUCCESS_MESSAGE, ErrorKind, failure
from cards.jobs import TASK_NAME
from cards.kinds import ASSIGN_CARD
from cards.redaction import without_secrets
from harness.gateway_process import GatewayProcess, run_gateway
from harness.processes import BIN, CeleryWorker, RedisServer, client_app, run_worker, wait_for
from producers.client import get_result
from stripe_emulator.process import EmulatorProcess
from tests.integration.conftest import API_KEY, applied_writes, customer_writes, worker_env
from worker.idempotency import idempotency_key

KEY = "integration-gateway-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
#: A bare key of another caller (its own tenant), and an operator's admin key.
OTHER_KEY = "some-other-key-abcdefghij"
OTHER = {"Authorization": f"Bearer {OTHER_KEY}"}
ADMIN = {"Authorization": "Bearer integration-admin-key-0123456789"}
#: Redis databases of this module's own workers (the session worker uses 0).
MISCONFIGURED_DB, SHORT_BUDGET_DB, NO_WORKER_DB = 11, 12, 13
JOB_TIMEOUT = 30


def gateway_env(redis_url: str, emulator_url: str, **overrides: str) -> dict[str, str]:
    return {
        **worker_env(redis_url, emulator_url),
        "CARDS_GATEWAY_API_KEYS": f"{OTHER_KEY},{KEY},ops:admin:integration-admin-key-0123456789",
        **overrides,
    }


@pytest.fixture(scope="module")
def gateway(
    worker: CeleryWorker, redis_server: RedisServer, emulator: EmulatorProcess, logs_dir: Path
) -> Iterator[GatewayProcess]:
    env = gateway_env(redis_server.url(), emulator.url)
    with run_gateway(env, logs_dir / "gateway.log") as process:
        yield process


@pytest.fixture
def http(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, headers=AUTH, timeout=JOB_TIMEOUT) as client:
        yield client


def poll_until_done(http: httpx.Client, status_url: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def done() -> bool:
        response = http.get(status_url)
        assert response.status_code == 200, response.text
        seen.update(response.json()["data"])
        return bool(seen["state"] == "done")

    wait_for(done, JOB_TIMEOUT, f"{status_url} to be done")
    return seen


# ------------------------------------------------------------------ 200 / 202


def test_wait_answers_exactly_the_seeds_response(
    http: httpx.Client, emulator: EmulatorProcess, customers: list[dict[str, Any]]
) -> None:
    customer = customers[0]
    card = customer["cards"][1]
    response = http.post(
        "/api/cards/default?wait=10", json={"userId": customer["id"], "default_source": card}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"status", "message", "data"}
    assert body["status"] is True
    assert body["message"] == SUCCESS_MESSAGE
    # The customer as Stripe returns it, but a source's client_secret is never stored.
    assert body["data"] == without_secrets(emulator.admin.get_customer(customer["id"]))
    assert body["data"]["default_source"] == card
    assert {"id", "object", "email", "name", "sources"} <= set(body["data"])


def test_without_wait_it_is_queued_and_the_status_url_gives_the_envelope(
    http: httpx.Client, emulator: EmulatorProcess, customers: list[dict[str, Any]]
) -> None:
    customer = customers[1]
    source = customer["sources"][0]
    response = http.post(
        "/api/cards/default", json={"userId": customer["id"], "default_source": source}
    )
    assert response.status_code == 202, response.text
    body = response.json()
    job_id = body["data"]["job_id"]
    assert body == {
        "status": True,
        "message": "queued",
        "data": {"job_id": job_id, "status_url": f"/api/jobs/{job_id}"},
    }
    assert response.headers["location"] == f"/api/jobs/{job_id}"
    status = poll_until_done(http, body["data"]["status_url"])
    assert status["job_id"] == job_id
    assert status["result"]["status"] is True
    assert status["result"]["data"]["default_source"] == source
    assert applied_writes(emulator, idempotency_key(job_id)) == 1


def test_the_seeds_use_cases_assign_then_default_then_switch(
    http: httpx.Client, emulator: EmulatorProcess, customers: list[dict[str, Any]]
) -> None:
    customer_id = customers[2]["id"]
    # Setting Default After Card Assignment
    assign = http.post(
        "/api/cards/assign?wait=10", json={"userId": customer_id, "source": "tok_visa"}
    )
    assert assign.status_code == 200, assign.text
    card_id = assign.json()["data"]["cardId"]
    assert card_id.startswith("card_")
    assert assign.json()["data"]["card"]["id"] == card_id
    default = http.post(
        "/api/cards/default?wait=10", json={"userId": customer_id, "default_source": card_id}
    )
    assert default.status_code == 200, default.text
    assert default.json()["data"]["default_source"] == card_id
    # Switching Default Cards: list, pick the second, make it the default
    listing = http.get(f"/api/cards/{customer_id}")
    assert listing.status_code == 200, listing.text
    cards = listing.json()["data"]
    stored = emulator.admin.get_customer(customer_id)["sources"]["data"]
    assert [c["id"] for c in cards] == [s["id"] for s in stored]
    assert card_id in [c["id"] for c in cards]
    selected = cards[1]["id"]
    switched = http.post(
        "/api/cards/default?wait=10", json={"userId": customer_id, "default_source": selected}
    )
    assert switched.status_code == 200, switched.text
    assert emulator.admin.get_customer(customer_id)["default_source"] == selected


def test_a_list_with_wait_0_is_queued(http: httpx.Client, customers: list[dict[str, Any]]) -> None:
    response = http.get(f"/api/cards/{customers[0]['id']}?wait=0")
    assert response.status_code == 202
    status = poll_until_done(http, response.json()["data"]["status_url"])
    assert len(status["result"]["data"]) == len(customers[0]["cards"]) + len(
        customers[0]["sources"]
    )


# ------------------------------------------------------- Stripe's refusals: 4xx


@pytest.mark.parametrize(
    ("case", "status", "kind", "message"),
    [
        ("no_such_customer", 404, "no_such_customer", "no such customer"),
        ("card_of_other_customer", 400, "not_attached", "card is not attached to this customer"),
        ("unknown_token", 400, "invalid_request", "Stripe rejected the request: No such token"),
        ("list_no_such_customer", 404, "no_such_customer", "no such customer"),
        ("assign_no_such_customer", 404, "no_such_customer", "no such customer"),
    ],
)
def test_stripe_refusals_answer_their_status_with_the_envelope(
    http: httpx.Client,
    customers: list[dict[str, Any]],
    case: str,
    status: int,
    kind: str,
    message: str,
) -> None:
    me, other = customers[0], customers[1]
    nobody = "cus_NoSuchCustomer0"
    method, url, body = {
        "no_such_customer": (
            "POST",
            "/api/cards/default",
            {"userId": nobody, "default_source": me["cards"][0]},
        ),
        "card_of_other_customer": (
            "POST",
            "/api/cards/default",
            {"userId": me["id"], "default_source": other["cards"][0]},
        ),
        "unknown_token": (
            "POST",
            "/api/cards/assign",
            {"userId": me["id"], "source": "tok_DoesNotExist0"},
        ),
        "list_no_such_customer": ("GET", f"/api/cards/{nobody}", None),
        "assign_no_such_customer": (
            "POST",
            "/api/cards/assign",
            {"userId": nobody, "source": "tok_visa"},
        ),
    }[case]
    response = http.request(method, url + "?wait=10", json=body)
    assert response.status_code == status, response.text
    envelope = response.json()
    assert envelope["status"] is False
    assert envelope["message"].startswith(message)
    assert envelope["data"]["kind"] == kind
    assert envelope["data"]["attempts"] == 1
    assert envelope["data"]["request_id"].startswith("req_")


def test_a_job_id_reused_for_other_fields_is_a_409_and_for_the_same_a_replay(
    http: httpx.Client, emulator: EmulatorProcess, customers: list[dict[str, Any]]
) -> None:
    customer = customers[3]
    job = {"userId": customer["id"], "default_source": customer["cards"][1], "job_id": "gw-reuse-1"}
    first = http.post("/api/cards/default?wait=10", json=job)
    again = http.post("/api/cards/default?wait=10", json=job)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert applied_writes(emulator, idempotency_key("gw-reuse-1")) == 1
    conflict = http.post(
        "/api/cards/default?wait=10", json={**job, "default_source": customer["cards"][0]}
    )
    assert conflict.status_code == 409, conflict.text
    assert conflict.json()["data"]["kind"] == "idempotency_conflict"
    assert conflict.json()["message"].startswith("job_id gw-reuse-1 is already used by another")
    assert emulator.admin.get_customer(customer["id"])["default_source"] == customer["cards"][1]
    assert http.get("/api/jobs/gw-reuse-1").json()["data"]["result"] == first.json()


def test_another_keys_requests_never_touch_a_job(
    http: httpx.Client, emulator: EmulatorProcess, customers: list[dict[str, Any]]
) -> None:
    """The probe: key B, key A's job id and a refused callback_url once deleted A's result;
    a valid re-post then replaced it. Now B gets a 400 or a 409 and A's job stands."""
    customer = customers[2]
    job_id = "gw-owned-1"
    job = {"userId": customer["id"], "default_source": customer["cards"][1], "job_id": job_id}
    first = http.post("/api/cards/default?wait=10", json=job)
    assert first.status_code == 200, first.text
    refused = http.post(
        "/api/cards/default",
        json={**job, "callback_url": "http://10.0.0.1/hook"},
        headers=OTHER,
    )
    assert refused.status_code == 400, refused.text
    mine = http.get(f"/api/jobs/{job_id}").json()["data"]
    assert (mine["state"], mine["result"]) == ("done", first.json())  # once "queued", null
    for body in ({**job, "default_source": customer["cards"][0]}, job):
        replaced = http.post("/api/cards/default?wait=10", json=body, headers=OTHER)
        assert replaced.status_code == 409, replaced.text
        assert replaced.json()["data"] == {
            "kind": "idempotency_conflict",
            "code": None,
            "param": "job_id",
            "request_id": None,
            "attempts": 0,
        }
    assert http.get(f"/api/jobs/{job_id}", headers=OTHER).status_code == 404
    for headers in (AUTH, ADMIN):
        status = http.get(f"/api/jobs/{job_id}", headers=headers).json()["data"]
        assert (status["state"], status["result"]) == ("done", first.json())
    assert emulator.admin.get_customer(customer["id"])["default_source"] == customer["cards"][1]
    assert applied_writes(emulator, idempotency_key(job_id)) == 1


def test_a_far_future_request_never_blocks_its_customer(
    http: httpx.Client,
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    customers: list[dict[str, Any]],
) -> None:
    """A requested_at in 9999 once won every comparison for two days: every later request
    for the customer, from any key, ended "superseded"."""
    customer = customers[1]
    far = {
        "userId": customer["id"],
        "default_source": customer["cards"][0],
        "requested_at": "9999-12-31T23:59:59Z",
    }
    refused = http.post("/api/cards/default?wait=10", json=far)
    assert refused.status_code == 400, refused.text
    assert "requested_at must not be more than 300 s in the future" in refused.json()["message"]
    # A raw Celery client skips every producer check; the worker refuses it too.
    app = client_app(redis_server.url())
    raw = app.send_task(TASK_NAME, kwargs=far)
    envelope = get_result(raw.id, timeout=JOB_TIMEOUT, app=app)
    assert envelope["status"] is False
    assert envelope["data"] is not None
    assert (envelope["data"]["kind"], envelope["data"]["param"]) == ("invalid_job", "requested_at")
    now = {"userId": customer["id"], "default_source": customer["cards"][1]}
    applied = http.post("/api/cards/default?wait=10", json=now)
    assert applied.status_code == 200, applied.text
    assert applied.json()["data"]["default_source"] == customer["cards"][1]


@pytest.mark.parametrize("fault", ["error_500_after_commit", "error_500"])
def test_assign_after_a_500_attaches_exactly_one_card(
    http: httpx.Client,
    emulator: EmulatorProcess,
    customers: list[dict[str, Any]],
    fault: str,
) -> None:
    customer_id = customers[0]["id"]
    before = len(emulator.admin.get_customer(customer_id)["sources"]["data"])
    emulator.admin.script_faults(customer_id, [fault])
    response = http.post(
        "/api/cards/assign?wait=20",
        json={"userId": customer_id, "source": "tok_mastercard", "job_id": f"gw-assign-{fault}"},
    )
    assert response.status_code == 200, response.text
    cards = emulator.admin.get_customer(customer_id)["sources"]["data"]
    assert len(cards) == before + 1
    tagged = [c["id"] for c in cards if c["metadata"].get("cards_job_id") == f"gw-assign-{fault}"]
    assert tagged == [response.json()["data"]["cardId"]]
    key = idempotency_key(f"gw-assign-{fault}", prefix=ASSIGN_CARD.key_prefix)
    assert applied_writes(emulator, key) == (1 if fault == "error_500_after_commit" else 0)
    assert customer_writes(emulator, customer_id) == 1


def test_a_retrying_jobs_status_shows_its_last_error(
    http: httpx.Client, emulator: EmulatorProcess, customers: list[dict[str, Any]]
) -> None:
    customer = customers[3]
    stored = emulator.admin.get_customer(customer["id"])
    emulator.admin.script_faults(customer["id"], ["error_500"] * 20)
    try:
        response = http.post(
            "/api/cards/default",
            json={"userId": customer["id"], "default_source": customer["cards"][0]},
        )
        assert response.status_code == 202, response.text
        status_url = response.json()["data"]["status_url"]
        seen: dict[str, Any] = {}

        def retrying() -> bool:
            answer = http.get(status_url)
            assert answer.status_code == 200, answer.text
            seen.update(answer.json())
            return bool(seen["data"]["state"] == "retrying")

        wait_for(retrying, JOB_TIMEOUT, "the job to be retrying")
    finally:
        emulator.admin.clear_faults(customer["id"])
    assert seen["message"] == "job is retrying"
    assert seen["data"]["result"] is None
    assert seen["data"]["last_error"] == "server_error: Stripe server error (500)"
    shown = json.dumps(seen)
    for private in (API_KEY, stored["email"], stored["name"], KEY):
        assert private not in shown
    done = poll_until_done(http, status_url)
    assert done["result"]["status"] is True
    assert done["last_error"] is None


# ---------------------------------------------------- the service behind: 5xx


@pytest.fixture
def gateway_on(
    redis_server: RedisServer, emulator: EmulatorProcess, logs_dir: Path
) -> Iterator[Callable[..., GatewayProcess]]:
    """``gateway_on(db, **settings)``: a worker and a gateway with those settings, on ``db``."""
    with ExitStack() as stack:

        def start(db: int, **overrides: str) -> GatewayProcess:
            env = gateway_env(redis_server.url(db), emulator.url, **overrides)
            stack.enter_context(run_worker(env, logs_dir / f"worker-{db}.log", name=f"gw{db}"))
            return stack.enter_context(run_gateway(env, logs_dir / f"gateway-{db}.log"))

        yield start


@pytest.fixture(scope="module")
def workerless_gateway(
    redis_server: RedisServer, emulator: EmulatorProcess, logs_dir: Path
) -> Iterator[GatewayProcess]:
    """A gateway whose queue no worker reads: the test plays the worker."""
    env = gateway_env(redis_server.url(NO_WORKER_DB), emulator.url)
    with run_gateway(env, logs_dir / "gateway-workerless.log") as process:
        yield process


def test_a_misconfigured_worker_is_a_502(
    gateway_on: Callable[..., GatewayProcess],
    emulator: EmulatorProcess,
    customers: list[dict[str, Any]],
) -> None:
    # A worker whose key Stripe refuses takes no job (its breaker, test_breaker.py);
    # a job already running when Stripe starts refusing the key ends misconfigured.
    process = gateway_on(MISCONFIGURED_DB)
    customer = customers[0]
    emulator.admin.script_faults(customer["id"], ["error_401"])
    response = httpx.post(
        f"{process.url}/api/cards/default?wait=10",
        json={"userId": customer["id"], "default_source": customer["cards"][1]},
        headers=AUTH,
        timeout=JOB_TIMEOUT,
    )
    assert response.status_code == 502, response.text
    assert response.json()["data"]["kind"] == "misconfigured"
    assert API_KEY not in response.text


def test_stripe_unavailable_past_the_retry_budget_is_a_503(
    gateway_on: Callable[..., GatewayProcess],
    emulator: EmulatorProcess,
    customers: list[dict[str, Any]],
) -> None:
    process = gateway_on(SHORT_BUDGET_DB, CARDS_RETRY_MAX_ATTEMPTS="2")
    customer = customers[0]
    emulator.admin.script_faults(customer["id"], ["rate_limit"] * 20)
    try:
        response = httpx.post(
            f"{process.url}/api/cards/default?wait=20",
            json={"userId": customer["id"], "default_source": customer["cards"][1]},
            headers=AUTH,
            timeout=JOB_TIMEOUT,
        )
    finally:
        emulator.admin.clear_faults(customer["id"])
    assert response.status_code == 503, response.text
    error = response.json()["data"]
    assert error["kind"] == "stripe_unavailable"
    assert error["code"] == "rate_limit"
    assert error["attempts"] == 2


def test_a_wait_that_runs_out_is_a_504_and_the_job_goes_on(
    http: httpx.Client, emulator: EmulatorProcess, customers: list[dict[str, Any]]
) -> None:
    customer = customers[0]
    emulator.admin.configure(latency_ms=3000)
    try:
        response = http.post(
            "/api/cards/default?wait=1",
            json={"userId": customer["id"], "default_source": customer["cards"][1]},
        )
    finally:
        emulator.admin.configure(latency_ms=0)
    assert response.status_code == 504, response.text
    body = response.json()
    job_id = body["data"]["job_id"]
    assert body["status"] is False
    assert body["message"] == f"job {job_id} has no result after 1 s; it goes on: poll status_url"
    assert body["data"]["status_url"] == f"/api/jobs/{job_id}"
    status = poll_until_done(http, body["data"]["status_url"])
    assert status["result"]["status"] is True
    assert emulator.admin.get_customer(customer["id"])["default_source"] == customer["cards"][1]


@pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")
@pytest.mark.parametrize(
    ("kind", "status"),
    [
        (ErrorKind.CARD_DECLINED, 402),
        (ErrorKind.INVALID_JOB, 400),
        (ErrorKind.NOT_ATTACHED, 400),
        (ErrorKind.INVALID_REQUEST, 400),
        (ErrorKind.NO_SUCH_CUSTOMER, 404),
        (ErrorKind.IDEMPOTENCY_CONFLICT, 409),
        (ErrorKind.MISCONFIGURED, 502),
        (ErrorKind.INTERNAL, 502),
        (ErrorKind.STRIPE_UNAVAILABLE, 503),
    ],
)
def test_every_kind_from_a_stand_in_worker_gets_its_status(
    workerless_gateway: GatewayProcess, redis_server: RedisServer, kind: ErrorKind, status: int
) -> None:
    process = workerless_gateway
    backend = client_app(redis_server.url(NO_WORKER_DB)).backend
    queue = redis_server.client(NO_WORKER_DB)
    job_id = f"stand-in-{kind.value}"
    envelope = failure(f"{kind.value} happened", kind, code="some_code", attempts=1)

    def stand_in_worker() -> None:
        wait_for(lambda: queue.llen("cards") > 0, 10, "the job on the queue")
        queue.delete("cards")
        backend.store_result(job_id, envelope, "SUCCESS")

    thread = threading.Thread(target=stand_in_worker)
    thread.start()
    try:
        response = httpx.post(
            f"{process.url}/api/cards/default?wait=10",
            json={"userId": "cus_A1", "default_source": "card_B2", "job_id": job_id},
            headers=AUTH,
            timeout=JOB_TIMEOUT,
        )
    finally:
        thread.join()
    assert response.status_code == status, response.text
    assert response.json() == envelope


# --------------------------------------------------------- the gateway itself


def test_over_real_http_keys_and_limits_hold(gateway: GatewayProcess) -> None:
    no_key = httpx.post(f"{gateway.url}/api/cards/default", json={})
    assert no_key.status_code == 401
    assert no_key.headers["www-authenticate"] == "Bearer"
    huge = httpx.post(
        f"{gateway.url}/api/cards/default",
        content=b"{" + b" " * 20000 + b"}",
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert huge.status_code == 413
    assert huge.json() == {
        "status": False,
        "message": "request body is larger than 16384 bytes",
        "data": None,
    }
    assert KEY not in gateway.log


def test_the_access_log_never_shows_a_query_string(gateway: GatewayProcess) -> None:
    secret = "query-string-secret-0123456789"
    httpx.get(f"{gateway.url}/api/jobs/access-log-probe?api_key={secret}", headers=AUTH)
    wait_for(lambda: "/api/jobs/access-log-probe" in gateway.log, 10, "the access log line")
    assert secret not in gateway.log
    assert '"path":"/api/jobs/access-log-probe"' in gateway.log


def test_job_status_of_an_unknown_job_is_a_404(http: httpx.Client) -> None:
    response = http.get("/api/jobs/never-enqueued-job")
    assert response.status_code == 404
    assert response.json() == {
        "status": False,
        "message": "no job never-enqueued-job for this API key",
        "data": None,
    }


def cards_gateway(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CARDS_GATEWAY_")}
    return subprocess.run(
        [str(BIN / "cards"), "gateway", "--port", "1", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "error: CARDS_GATEWAY_API_KEYS is not set"),
        ({"CARDS_GATEWAY_API_KEYS": "tooShort"}, "error: CARDS_GATEWAY_API_KEYS: every key"),
        (
            {"CARDS_GATEWAY_API_KEYS": "replace-with-a-long-random-key"},
            "error: CARDS_GATEWAY_API_KEYS entry 1: the key looks like a placeholder",
        ),
    ],
)
def test_without_a_usable_key_it_refuses_to_start(env: dict[str, str], message: str) -> None:
    done = cards_gateway(env)
    assert done.returncode == 2
    assert done.stderr.startswith(message)
    assert done.stderr.count("\n") == 1
    assert "tooShort" not in done.stderr
    assert "replace-with" not in done.stderr
    assert "Traceback" not in done.stderr


def test_dev_no_auth_is_a_command_line_flag_for_loopback_only(
    redis_server: RedisServer, emulator: EmulatorProcess, logs_dir: Path
) -> None:
    base = worker_env(redis_server.url(NO_WORKER_DB), emulator.url)
    # In an env file it once switched keys off silently; now it is not a setting at all.
    env = {**base, "CARDS_GATEWAY_API_KEYS": KEY, "CARDS_GATEWAY_DEV_NO_AUTH": "true"}
    with run_gateway(env, logs_dir / "gateway-dev-env.log") as process:
        assert httpx.get(f"{process.url}/api/jobs/some-job").status_code == 401
        assert "WITHOUT authentication" not in process.log
    exposed = cards_gateway({}, "--dev-no-auth", "--host", "0.0.0.0")
    assert exposed.returncode == 2
    assert exposed.stderr == (
        "error: --dev-no-auth serves without keys, so only on a loopback --host (127.0.0.1, ::1)\n"
    )
    no_keys = {**base, "CARDS_GATEWAY_API_KEYS": ""}
    with run_gateway(
        no_keys, logs_dir / "gateway-dev.log", extra_args=("--dev-no-auth",)
    ) as process:
        response = httpx.get(f"{process.url}/api/jobs/some-job")
        assert response.status_code == 200
        assert "WITHOUT authentication" in process.log


def test_the_gateway_never_imports_stripe_or_the_worker() -> None:
    probe = (
        "import sys, producers.http.app, producers.cli; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('stripe', 'worker')]; "
        "assert not bad, bad"
    )
    subprocess.run([str(BIN / "python"), "-c", probe], check=True, timeout=60)


def test_openapi_is_served(gateway: GatewayProcess) -> None:
    schema = httpx.get(f"{gateway.url}/openapi.json").json()
    assert json.dumps(schema).count("/api/") >= 4

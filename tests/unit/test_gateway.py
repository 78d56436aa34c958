"""The HTTP gateway without a worker: status table, auth, bad input, schema, start-up rules.

Requests go through the real ASGI app in process (httpx's ASGITransport). The
Celery app points at a closed loopback port, so any request that got as far as
queueing a job would fail with 503: every other status here is answered before
the broker is touched. Jobs that run end to end are in
``tests/integration/test_gateway.py``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import httpx
import kombu.exceptions
import pytest
from celery import Celery
from hypothesis import given
from hypothesis import strategies as st

from cards.companion_jobs import validate_assign_job
from cards.envelope import ErrorKind, failure, success
from cards.jobs import InvalidJob, validate_job
from cards.settings import Settings
from harness.processes import REPO_ROOT, client_app, free_port
from producers.http import models, publish
from producers.http.app import GatewayConfigError, create_app
from producers.http.auth import (
    DEFAULT_SCOPES,
    MIN_KEY_LENGTH,
    ApiKeys,
    Caller,
    InvalidApiKeys,
    Scope,
)
from producers.http.body import is_json_media_type
from producers.http.dispatch import fail_fast, public_state
from producers.http.errors import STATUS_BY_KIND, status_for
from producers.http.ownership import Claim, JobOwners
from producers.http.publish import NotRecorded, Publisher, RecordedCommands, recording_producer

KEY = "unit-test-key-0123456789"
OTHER_KEY = "another-key-abcdefghijkl"
AUTH = {"Authorization": f"Bearer {KEY}"}
GOOD = {"userId": "cus_QRs9eKZ4xUzN2TP9", "default_source": "card_1QRs9eKZ4xUzN2TPabcdefgh"}
BODY_LIMIT = 2048


# ------------------------------------------------------------------ pure parts


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        (ErrorKind.INVALID_JOB, 400),
        (ErrorKind.NOT_ATTACHED, 400),
        (ErrorKind.INVALID_REQUEST, 400),
        (ErrorKind.CARD_DECLINED, 402),
        (ErrorKind.NO_SUCH_CUSTOMER, 404),
        (ErrorKind.IDEMPOTENCY_CONFLICT, 409),
        (ErrorKind.MISCONFIGURED, 502),
        (ErrorKind.INTERNAL, 502),
        (ErrorKind.STRIPE_UNAVAILABLE, 503),
    ],
)
def test_each_failure_kind_has_its_status(kind: ErrorKind, status: int) -> None:
    assert status_for(failure("why", kind)) == status


def test_the_table_covers_every_kind() -> None:
    assert set(STATUS_BY_KIND) == set(ErrorKind)


@pytest.mark.parametrize(
    ("envelope", "status"),
    [
        (success({"id": "cus_1"}), 200),
        ({"status": True, "message": "ok", "data": [{"id": "card_1"}]}, 200),
        ({"status": False, "message": "?", "data": {"kind": "from_a_newer_worker"}}, 502),
        ({"status": False, "message": "?", "data": None}, 502),
    ],
)
def test_success_and_unknown_failures(envelope: dict[str, Any], status: int) -> None:
    assert status_for(envelope) == status


@pytest.mark.parametrize(
    ("celery_state", "public"),
    [
        ("PENDING", "queued"),
        ("RECEIVED", "queued"),
        ("STARTED", "running"),
        ("RETRY", "retrying"),
        ("SUCCESS", "done"),
        ("FAILURE", "failed"),
        ("REVOKED", "revoked"),
        ("CUSTOM", "custom"),
    ],
)
def test_public_states(celery_state: str, public: str) -> None:
    assert public_state(celery_state) == public


@pytest.mark.parametrize(
    ("content_type", "is_json"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("Application/JSON", True),
        ("application/merge-patch+json", True),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
        ("", False),
        (None, False),
    ],
)
def test_json_media_types(content_type: str | None, is_json: bool) -> None:
    assert is_json_media_type(content_type) is is_json


def test_api_keys_are_comma_separated_and_compared_exactly() -> None:
    keys = ApiKeys.parse(Settings(gateway_api_keys=f" {KEY} ,{OTHER_KEY},, ").gateway_api_keys)
    assert keys
    assert keys.accepts(KEY)
    assert keys.accepts(OTHER_KEY)
    assert not keys.accepts(KEY[:-1])
    assert not keys.accepts(KEY + "x")
    assert not keys.accepts("")
    assert not keys.accepts("ключ")  # non-ASCII never raises
    assert KEY not in repr(keys)


def test_no_keys_and_short_keys() -> None:
    assert not ApiKeys.parse(None)
    with pytest.raises(InvalidApiKeys) as caught:
        ApiKeys.parse(Settings(gateway_api_keys=f"{KEY},short").gateway_api_keys)
    assert "short" not in str(caught.value)
    assert str(MIN_KEY_LENGTH) in str(caught.value)


def test_settings_never_show_the_keys() -> None:
    settings = Settings(gateway_api_keys=KEY)
    assert KEY not in repr(settings)
    assert KEY not in str(settings.model_dump())


# ----------------------------------------------- the schema says what is checked


def _pattern_strings(pattern: str) -> st.SearchStrategy[str]:
    return st.from_regex(re.compile(pattern.rstrip("$") + r"\Z", re.ASCII), fullmatch=True)


@given(
    user_id=_pattern_strings(models.CUSTOMER_PATTERN).filter(lambda s: len(s) <= 255),
    source=_pattern_strings(models.DEFAULT_SOURCE_PATTERN).filter(lambda s: len(s) <= 255),
    job_id=_pattern_strings(models.JOB_ID_PATTERN).filter(lambda s: len(s) <= 128),
    account=_pattern_strings(models.ACCOUNT_PATTERN).filter(lambda s: len(s) <= 255),
)
def test_what_the_schema_allows_the_contract_accepts(
    user_id: str, source: str, job_id: str, account: str
) -> None:
    fields = {"userId": user_id, "default_source": source, "job_id": job_id}
    validate_job({**fields, "stripe_account": account})
    validate_assign_job({"userId": user_id, "source": "tok_visa", "job_id": job_id})


@given(text=st.text(max_size=40))
def test_what_the_contract_accepts_the_schema_allows(text: str) -> None:
    for field, pattern in [
        ("userId", models.CUSTOMER_PATTERN),
        ("default_source", models.DEFAULT_SOURCE_PATTERN),
        ("job_id", models.JOB_ID_PATTERN),
    ]:
        fields = {**GOOD, field: text}
        try:
            validate_job(fields)
        except InvalidJob:
            continue
        assert re.fullmatch(pattern.rstrip("$"), text)


def test_openapi_documents_no_422_and_no_null_parameters() -> None:
    schema = create_app(settings(), unreachable_app()).openapi()
    assert "HTTPValidationError" not in json.dumps(schema)
    for path_item in schema["paths"].values():
        for operation in path_item.values():
            assert "422" not in operation["responses"]
            for parameter in operation.get("parameters", []):
                assert "anyOf" not in parameter["schema"]
    body = schema["paths"]["/api/cards/default"]["post"]["requestBody"]
    described = body["content"]["application/json"]["schema"]
    assert described["required"] == ["userId", "default_source"]
    assert described["additionalProperties"] is False
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


# ----------------------------------------------------------------- the app


def settings(**overrides: Any) -> Settings:
    """The gateway's settings; its job-id claims (Redis) are unreachable too."""
    defaults: dict[str, Any] = {
        "gateway_api_keys": KEY,
        "gateway_max_body_bytes": BODY_LIMIT,
        "state_redis_url": f"redis://127.0.0.1:{free_port()}/0",
    }
    return Settings(**{**defaults, **overrides})


def unreachable_app() -> Celery:
    return client_app(f"redis://127.0.0.1:{free_port()}/0")


def call(app: Any, method: str, url: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.request(method, url, **kwargs)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def gateway() -> Any:
    return create_app(settings(), unreachable_app())


def assert_error(response: httpx.Response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] is False
    assert body["message"].startswith(message), body["message"]
    assert body["data"] is None
    assert "Traceback" not in response.text


def test_refuses_to_start_without_keys() -> None:
    with pytest.raises(GatewayConfigError, match="CARDS_GATEWAY_API_KEYS is not set"):
        create_app(Settings(gateway_api_keys=None), unreachable_app())


def test_refuses_to_start_with_a_short_key() -> None:
    with pytest.raises(GatewayConfigError, match="at least 16 characters"):
        create_app(Settings(gateway_api_keys="short"), unreachable_app())


def test_dev_no_auth_serves_without_keys() -> None:
    app = create_app(settings(gateway_api_keys=None), unreachable_app(), dev_no_auth=True)
    response = call(app, "POST", "/api/cards/default", json={"userId": "nope"})
    assert_error(response, 400, 'invalid job: userId must start with "cus_"')


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/cards/default"),
        ("POST", "/api/cards/assign"),
        ("GET", "/api/cards/cus_A1"),
        ("GET", "/api/jobs/job-1"),
    ],
)
@pytest.mark.parametrize(
    ("headers", "challenge"),
    [
        ({}, "Bearer"),
        ({"Authorization": f"Bearer {OTHER_KEY}"}, 'Bearer error="invalid_token"'),
        ({"Authorization": f"Basic {KEY}"}, "Bearer"),
        ({"Authorization": KEY}, "Bearer"),
    ],
    ids=["none", "unknown-key", "basic-scheme", "no-scheme"],
)
def test_every_api_route_needs_a_key(
    gateway: Any, method: str, path: str, headers: dict[str, str], challenge: str
) -> None:
    response = call(gateway, method, path, json=GOOD, headers=headers)
    assert_error(response, 401, "an API key is required" if challenge == "Bearer" else "the API")
    assert response.headers["www-authenticate"] == challenge
    assert KEY not in response.text and OTHER_KEY not in response.text


def test_auth_is_checked_before_the_body_is_read(gateway: Any) -> None:
    response = call(gateway, "POST", "/api/cards/default", content=b"x" * (BODY_LIMIT + 1))
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
            "invalid request: the body is not valid JSON",
        ),
        (
            {"content": b"\xff\xfe", "headers": {"Content-Type": "application/json"}},
            "invalid request: the body is not valid JSON",
        ),
        (
            {"content": b"[" * 1020 + b"]" * 1020, "headers": {"Content-Type": "application/json"}},
            "invalid request: the body is not valid JSON",
        ),
        (
            {"content": b"", "headers": {"Content-Type": "application/json"}},
            "invalid request: the body is not valid JSON",
        ),
        (
            {"content": json.dumps(GOOD).encode(), "headers": {"Content-Type": "text/plain"}},
            "invalid request: Content-Type must be application/json",
        ),
        (
            {"content": json.dumps(GOOD).encode()},
            "invalid request: Content-Type must be application/json",
        ),
        ({"data": GOOD}, "invalid request: Content-Type must be application/json"),
        ({"json": [GOOD]}, "invalid job: job must be a JSON object of named fields"),
        ({"json": "cus_1"}, "invalid job: job must be a JSON object of named fields"),
        (
            {"content": b"null", "headers": {"Content-Type": "application/json"}},
            "invalid job: job must be a JSON object of named fields",
        ),
        (
            {"json": {"userId": "usr_1", "default_source": "card_1"}},
            'invalid job: userId must start with "cus_"',
        ),
        (
            {"json": {**GOOD, "defaultSource": "card_1"}},
            'invalid job: unknown field "defaultSource" (did you mean "default_source"?)',
        ),
        ({"json": {"default_source": "card_1"}}, "invalid job: userId is required"),
        ({"json": {**GOOD, "userId": 42}}, "invalid job: userId must be a string"),
        (
            {"json": {**GOOD, "callback_url": "ftp://x"}},
            "invalid job: callback_url must be an http or https URL",
        ),
    ],
    ids=lambda value: None if isinstance(value, dict) else value[:40],
)
def test_bad_input_is_a_400_naming_the_problem(
    gateway: Any, kwargs: dict[str, Any], message: str
) -> None:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    response = call(gateway, "POST", "/api/cards/default", headers=headers, **kwargs)
    assert_error(response, 400, message)


def test_a_refused_value_is_never_echoed(gateway: Any) -> None:
    secret = "cus_" + "S3cr3tVal" * 30
    response = call(
        gateway,
        "POST",
        "/api/cards/default",
        headers=AUTH,
        json={"userId": secret, "default_source": "card_1"},
    )
    assert_error(response, 400, "invalid job: userId must be at most 255 characters")
    assert "S3cr3tVal" not in response.text


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/api/cards/assign", 'invalid job: source must start with "tok_" or "src_"'),
    ],
)
def test_assign_validates_its_own_contract(gateway: Any, path: str, message: str) -> None:
    response = call(gateway, "POST", path, headers=AUTH, json={"userId": "cus_1", "source": "x"})
    assert_error(response, 400, message)


async def chunks(total: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * 512
        sent += 512


@pytest.mark.parametrize(
    "kwargs",
    [
        {"content": b" " * (BODY_LIMIT + 1)},
        {"content": chunks(BODY_LIMIT * 4)},  # chunked: no Content-Length to trust
    ],
    ids=["content-length", "chunked"],
)
def test_a_body_over_the_limit_is_a_413(gateway: Any, kwargs: dict[str, Any]) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    response = call(gateway, "POST", "/api/cards/default", headers=headers, **kwargs)
    assert_error(response, 413, f"request body is larger than {BODY_LIMIT} bytes")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/api/cards/default?wait=-1", "invalid request: wait must be a finite number"),
        ("/api/cards/default?wait=abc", "invalid request: wait must be a finite number"),
        ("/api/cards/default?wait=nan", "invalid request: wait must be a finite number"),
        ("/api/cards/default?wait=inf", "invalid request: wait must be a finite number"),
        ("/api/jobs/-bad", "invalid request: job_id must be letters, digits"),
        ("/api/jobs/" + "a" * 129, "invalid request: job_id must be at most 128 characters"),
        ("/api/jobs/a%20b", "invalid request: job_id must be letters, digits"),
        ("/api/cards/usr_1", 'invalid request: customerId must start with "cus_"'),
        ("/api/cards/cus_1?stripe_account=acct_", "invalid job: stripe_account must be"),
        ("/api/cards/cus_1?wait=-2", "invalid request: wait must be a finite number"),
    ],
)
def test_bad_parameters_are_a_400_naming_them(gateway: Any, url: str, message: str) -> None:
    method = "POST" if url.startswith("/api/cards/default") else "GET"
    response = call(gateway, method, url, headers=AUTH, json=GOOD)
    assert_error(response, 400, message)


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/nowhere", 404, "not found"),
        ("GET", "/api/cards/default/extra", 404, "not found"),
        ("GET", "/api/jobs/", 404, "not found"),
        ("DELETE", "/api/cards/default", 405, "method not allowed"),
    ],
)
def test_unknown_routes_answer_in_the_same_shape(
    gateway: Any, method: str, path: str, status: int, message: str
) -> None:
    assert_error(call(gateway, method, path, headers=AUTH), status, message)


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("POST", "/api/cards/default", {"json": GOOD}),
        ("POST", "/api/cards/assign", {"json": {"userId": "cus_1", "source": "tok_visa"}}),
        ("GET", "/api/cards/cus_1", {}),
        ("GET", "/api/jobs/job-1", {}),
    ],
)
def test_an_unreachable_broker_is_a_503_not_a_hang(
    gateway: Any, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    response = call(gateway, method, path, headers=AUTH, **kwargs)
    assert_error(response, 503, "cannot reach the")


def test_healthz_says_when_the_broker_is_unreachable(gateway: Any) -> None:
    response = call(gateway, "GET", "/healthz")
    assert response.status_code == 503
    assert response.json() == {
        "status": False,
        "message": "cannot reach the broker or result backend",
        "data": None,
    }


def test_the_schema_is_served_without_a_key(gateway: Any) -> None:
    response = call(gateway, "GET", "/openapi.json")
    assert response.status_code == 200
    assert set(response.json()["paths"]) == {
        "/api/cards/default",
        "/api/cards/assign",
        "/api/cards/{customerId}",
        "/api/jobs/{job_id}",
        "/healthz",
        "/readyz",
    }


# ------------------------------------------------- keys have tenants and scopes

SHOP_KEY = "shop-key-0123456789abcdef"
READER_KEY = "reader-key-0123456789abcd"
ADMIN_KEY = "admin-key-0123456789abcde"
WRITER_KEY = "writer-key-0123456789abcd"
SCOPED_KEYS = (
    f"shop:default+assign+list+read:{SHOP_KEY},audit:read:{READER_KEY},ops:admin:{ADMIN_KEY},"
    f"writer:default:{WRITER_KEY}"
)


def test_key_entries_name_a_tenant_and_scopes_and_bare_keys_keep_working() -> None:
    keys = ApiKeys.parse(
        Settings(gateway_api_keys=f"{SCOPED_KEYS},{KEY},{OTHER_KEY}").gateway_api_keys
    )
    shop, reader, admin = keys.caller(SHOP_KEY), keys.caller(READER_KEY), keys.caller(ADMIN_KEY)
    assert shop == Caller("shop", frozenset({Scope.DEFAULT, Scope.ASSIGN, Scope.LIST, Scope.READ}))
    assert reader == Caller("audit", frozenset({Scope.READ}))
    assert admin is not None and admin.reads("shop") and admin.reads(None)
    bare, other_bare = keys.caller(KEY), keys.caller(OTHER_KEY)
    assert bare is not None and other_bare is not None
    assert bare.scopes == DEFAULT_SCOPES
    assert bare.tenant != other_bare.tenant  # a bare key reads only its own jobs
    assert not bare.reads(other_bare.tenant) and bare.reads(bare.tenant)
    assert keys.caller("shop:default+assign+list+read:" + SHOP_KEY) is None
    assert SHOP_KEY not in repr(keys)


@pytest.mark.parametrize(
    ("configured", "problem"),
    [
        (f"shop:write:{SHOP_KEY}", "entry 1: scopes must be +-separated from default, assign"),
        (f"{KEY},Shop Team:read:{SHOP_KEY}", "entry 2: must be KEY or TENANT:SCOPES:KEY"),
        ("shop:read:short", "every key must be at least 16 characters"),
    ],
)
def test_bad_key_entries_are_named_by_number_never_by_value(configured: str, problem: str) -> None:
    with pytest.raises(InvalidApiKeys, match=re.escape(problem)) as caught:
        ApiKeys.parse(Settings(gateway_api_keys=configured).gateway_api_keys)
    assert SHOP_KEY not in str(caught.value) and "short" not in str(caught.value)


def test_the_example_env_files_placeholder_key_is_refused() -> None:
    example = (REPO_ROOT / ".env.example").read_text()
    [placeholder] = re.findall(r"^CARDS_GATEWAY_API_KEYS=(.+)$", example, re.MULTILINE)
    for configured in (placeholder, "x" * 32, f"shop:read:{placeholder}"):
        with pytest.raises(GatewayConfigError, match="looks like a placeholder"):
            create_app(Settings(gateway_api_keys=configured), unreachable_app())


def owned_app(owners: JobOwners, **overrides: Any) -> Any:
    return create_app(
        settings(gateway_api_keys=SCOPED_KEYS, **overrides), unreachable_app(), owners=owners
    )


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def owners() -> JobOwners:
    return JobOwners(fakeredis.FakeAsyncRedis(), ttl_seconds=3600)


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("POST", "/api/cards/default", "default"),
        ("POST", "/api/cards/assign", "assign"),
        ("GET", "/api/cards/cus_A1", "list"),
    ],
)
def test_a_key_without_the_routes_scope_is_a_403(
    owners: JobOwners, method: str, path: str, scope: str
) -> None:
    response = call(owned_app(owners), method, path, json=GOOD, headers=bearer(READER_KEY))
    assert_error(response, 403, f"this API key does not hold the {scope} scope")


def test_a_key_without_read_cannot_read_jobs(owners: JobOwners) -> None:
    asyncio.run(owners.claim("writer-job-1", Claim("writer", "digest", sent=True)))
    response = call(owned_app(owners), "GET", "/api/jobs/writer-job-1", headers=bearer(WRITER_KEY))
    assert_error(response, 403, "this API key does not hold the read scope")


def test_a_job_is_read_only_by_its_tenant_or_an_admin(owners: JobOwners) -> None:
    asyncio.run(owners.claim("shop-job-1", Claim("shop", "digest", sent=True)))
    app = owned_app(owners)
    for key in (READER_KEY, KEY):  # another tenant; and a key no longer configured
        response = call(app, "GET", "/api/jobs/shop-job-1", headers=bearer(key))
        assert response.status_code in (401, 404), response.text
    assert_error(
        call(app, "GET", "/api/jobs/shop-job-1", headers=bearer(READER_KEY)),
        404,
        "no job shop-job-1 for this API key",
    )
    assert_error(
        call(app, "GET", "/api/jobs/never-sent", headers=bearer(SHOP_KEY)),
        404,
        "no job never-sent for this API key",
    )
    # Past the ownership check, both read the result backend (unreachable here).
    for key in (SHOP_KEY, ADMIN_KEY):
        response = call(app, "GET", "/api/jobs/shop-job-1", headers=bearer(key))
        assert_error(response, 503, "cannot reach the result backend")


def test_another_tenants_job_id_is_a_409_before_anything_is_touched(owners: JobOwners) -> None:
    claim = Claim("audit", "digest", sent=True)
    asyncio.run(owners.claim("taken-1", claim))
    response = call(
        owned_app(owners),
        "POST",
        "/api/cards/default",
        json={**GOOD, "job_id": "taken-1"},
        headers=bearer(SHOP_KEY),
    )
    assert response.status_code == 409, response.text
    assert response.json()["message"].startswith("job_id taken-1 is already used by another")
    assert asyncio.run(owners.claim("taken-1", claim))[1] == claim  # unchanged


def test_a_request_that_cannot_be_queued_leaves_no_claim(owners: JobOwners) -> None:
    response = call(
        owned_app(owners),
        "POST",
        "/api/cards/default",
        json={**GOOD, "job_id": "unqueued-1"},
        headers=bearer(SHOP_KEY),
    )
    assert_error(response, 503, "cannot reach the broker")
    assert asyncio.run(owners.owner("unqueued-1")) is None


@pytest.mark.parametrize("route", ["/api/cards/default", "/api/cards/assign"])
def test_a_far_future_requested_at_is_a_400(owners: JobOwners, route: str) -> None:
    body = {**GOOD, "requested_at": "9999-12-31T23:59:59Z"}
    if route.endswith("assign"):
        body = {"userId": GOOD["userId"], "source": "tok_visa", **body}
        del body["default_source"]
    response = call(owned_app(owners), "POST", route, json=body, headers=bearer(SHOP_KEY))
    assert_error(response, 400, "invalid job: requested_at must not be more than 300 s in the")
    assert asyncio.run(owners.owner("anything")) is None


# ------------------------------------------------------------------ the publisher


def test_the_recorder_keeps_kombus_commands_and_refuses_others() -> None:
    recorder = RecordedCommands()
    recorder.lpush("cards", "message")
    recorder.publish("/0.celeryev/task.sent", "event")
    recorder.sadd("_kombu.binding.cards", "cards\x06\x16\x06\x16cards")
    assert [c[0] for c in recorder.commands] == ["LPUSH", "PUBLISH", "SADD"]
    with pytest.raises(NotRecorded, match="llen"):
        recorder.llen("cards")


def test_a_broker_that_is_not_redis_gets_celerys_own_send() -> None:
    app = Celery("not-redis", broker="memory://", backend="cache+memory://")
    app.conf.task_default_queue = "cards"
    publisher = Publisher(app)
    job = validate_job({**GOOD, "job_id": "memory-job-1"}).stamped()
    marked = asyncio.run(publisher.send(job, ("SET", "never", "sent", "XX")))
    assert marked is False and publisher.is_redis is False  # the caller marks the claim
    with app.connection_for_read() as connection:
        message = connection.default_channel.basic_get("cards")
    assert message is not None and message.headers["id"] == "memory-job-1"


def test_an_unreachable_redis_broker_falls_back_to_celerys_send() -> None:
    publisher = Publisher(fail_fast(unreachable_app()))  # as the gateway's app
    job = validate_job(GOOD).stamped()
    with pytest.raises(kombu.exceptions.OperationalError):  # Celery's retries, then this
        asyncio.run(publisher.send(job))
    assert publisher.is_redis  # the next send tries the event loop again


def test_sends_waiting_on_a_failed_first_attempt_do_not_try_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The broker down as a burst arrives: one attempt to build the publisher, and
    # every send goes on to Celery's (which fails: a 503 for each request).
    attempts: list[str] = []
    real = publish.recording_producer

    def recording_producer(app: Celery) -> Any:
        attempts.append("attempt")
        return real(app)

    monkeypatch.setattr(publish, "recording_producer", recording_producer)
    publisher = Publisher(fail_fast(unreachable_app()))
    jobs = [validate_job({**GOOD, "job_id": f"outage-{n}"}).stamped() for n in range(8)]

    async def burst() -> list[BaseException | bool]:
        return await asyncio.gather(*(publisher.send(job) for job in jobs), return_exceptions=True)

    outcomes = asyncio.run(burst())
    assert attempts == ["attempt"]
    assert all(isinstance(o, kombu.exceptions.OperationalError) for o in outcomes), outcomes


def test_a_rabbitmq_broker_has_no_recording_channel() -> None:
    # py-amqp's transport: every job goes through Celery's send (publisher confirms).
    app = client_app(f"amqp://guest:guest@127.0.0.1:{free_port()}//", "redis://127.0.0.1:1/0")
    assert recording_producer(app) is None  # decided without connecting

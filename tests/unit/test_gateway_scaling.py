"""The gateway's pure pieces for scaling: shed answers, access lines, final results,
the in-flight cap as ASGI middleware, and serve's refusals."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from producers.http.access_log import access_line
from producers.http.app import GatewayConfigError, default_workers, serve
from producers.http.result_feed import is_final
from producers.http.shedding import InFlight, InFlightLimit, redis_pool_size, shed_body


def test_a_shed_answer_has_the_envelopes_shape() -> None:
    assert json.loads(shed_body(8)) == {
        "status": False,
        "message": "the gateway is at capacity (8 requests in flight); retry after 1 s",
        "data": None,
    }


@pytest.mark.parametrize(("cap", "connections"), [(1, 2), (2, 4), (256, 512)])
def test_each_client_may_open_two_connections_a_request_in_flight(
    cap: int, connections: int
) -> None:
    assert redis_pool_size(cap) == connections


def test_an_access_line_is_json_without_the_query_string() -> None:
    line = access_line(12.3456, "GET", "/api/jobs/x?api_key=secret", 404, 0.0012345)
    assert json.loads(line) == {
        "ts": 12.346,
        "method": "GET",
        "path": "/api/jobs/x",
        "status": 404,
        "ms": 1.23,
    }
    assert "secret" not in line


@pytest.mark.parametrize(
    ("meta", "final"),
    [
        (None, False),
        ({"status": "PENDING"}, False),
        ({"status": "STARTED"}, False),
        ({"status": "RETRY"}, False),
        ({"status": "SUCCESS"}, True),
        ({"status": "FAILURE"}, True),
        ({"status": "REVOKED"}, True),
    ],
)
def test_only_a_ready_state_is_a_final_result(meta: dict[str, str] | None, final: bool) -> None:
    assert is_final(meta) is final


def test_past_the_cap_requests_are_shed_and_probes_are_not() -> None:
    release = asyncio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/slow":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    in_flight = InFlight(1)
    app = InFlightLimit(slow, in_flight)

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            held = asyncio.create_task(client.get("/slow"))
            while not in_flight.saturated:
                await asyncio.sleep(0)
            shed = await client.get("/other")
            assert shed.headers["retry-after"] == "1"
            probes = [(await client.get(path)).status_code for path in ("/healthz", "/readyz")]
            release.set()
            after = (await held).status_code, (await client.get("/other")).status_code
            return [shed.status_code, *probes, *after]

    assert asyncio.run(run()) == [503, 200, 200, 200, 200]
    assert in_flight.count == 0


def test_default_workers_is_at_least_one() -> None:
    assert default_workers() >= 1


@pytest.mark.parametrize(
    ("workers", "dev_no_auth", "message"),
    [
        (0, False, "--workers must be at least 1"),
        (2, True, "--dev-no-auth serves one process: leave out --workers"),
    ],
)
def test_serve_refuses_bad_process_counts(workers: int, dev_no_auth: bool, message: str) -> None:
    with pytest.raises(GatewayConfigError, match=message):
        serve("127.0.0.1", 1, workers=workers, dev_no_auth=dev_no_auth)

"""A burst wider than redis-py's asyncio connection pool (100) meets no full pool.

Against a real Redis, BURST requests' worth of sends, claims and result reads at
once, up to the default in-flight cap: each gateway client's pool is sized from
the cap (``redis_pool_size``), so none fails with ``MaxConnectionsError``. Before,
a send past the 100th went through the thread pool, a claim failed the request,
and a waiter whose result was already stored slept until its deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from cards.results import ResultBackend
from cards.settings import Settings
from harness.processes import RedisServer, client_app, run_redis
from producers.client import build_job
from producers.http.app import _result_feed
from producers.http.ownership import Claim, ClaimOutcome, JobOwners
from producers.http.publish import Publisher

pytestmark = pytest.mark.timeout(120)

#: More than redis-py's asyncio pool default (100), within the default cap (256).
BURST = 200
#: A waiter's deadline, far beyond the test's own: an answer must come from the wake-up.
WAIT_SECONDS = 600
ANSWER_WITHIN_SECONDS = 60
ENVELOPE = {"status": True, "message": "ok", "data": {"id": "cus_burst"}}


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with run_redis() as private:
        yield private


def settings_for(server: RedisServer) -> Settings:
    url = server.url()
    settings = Settings(celery_broker_url=url, celery_result_backend=url)
    assert settings.gateway_max_in_flight >= BURST  # the default cap
    return settings


def test_a_burst_of_sends_all_go_on_the_event_loop(server: RedisServer) -> None:
    publisher = Publisher(client_app(server.url()))
    jobs = [build_job(f"cus_burst{n:04d}", "card_B2").stamped() for n in range(BURST)]

    async def burst() -> list[bool]:
        try:
            await publisher.send(jobs[0])  # built, so that the burst is all sends
            return await asyncio.gather(*(publisher.send(job) for job in jobs[1:]))
        finally:
            await publisher.close()

    assert asyncio.run(burst()) == [True] * (BURST - 1)  # none through the thread pool
    assert server.client().llen("cards") == BURST


def test_a_burst_of_claims_all_succeed(server: RedisServer) -> None:
    owners = JobOwners.from_settings(settings_for(server))
    claim = Claim("tenant-a", "digest")

    async def burst() -> list[tuple[ClaimOutcome, Claim]]:
        try:
            return await asyncio.gather(*(owners.claim(f"job-{n}", claim) for n in range(BURST)))
        finally:
            await owners.close()

    assert asyncio.run(burst()) == [(ClaimOutcome.NEW, claim)] * BURST


def test_a_burst_of_waits_on_stored_results_is_answered_without_the_deadline(
    server: RedisServer,
) -> None:
    app = client_app(server.url())
    job_ids = [f"stored-{n}" for n in range(BURST)]
    ResultBackend(app).store_many(dict.fromkeys(job_ids, ENVELOPE))  # before anyone waits
    feed = _result_feed(settings_for(server), app)

    async def burst() -> list[object]:
        try:
            async with asyncio.timeout(ANSWER_WITHIN_SECONDS):
                return await asyncio.gather(*(feed.wait(j, WAIT_SECONDS) for j in job_ids))
        finally:
            await feed.close()

    metas = asyncio.run(burst())
    assert [meta["result"] for meta in metas] == [ENVELOPE] * BURST  # type: ignore[index]

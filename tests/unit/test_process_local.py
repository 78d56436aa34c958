"""Per-process objects under the threads pool: built once however many jobs ask at once;
the Stripe client keeps a connection for every thread that calls it."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cards.settings import Settings
from worker.process_local import per_process
from worker.stripe_api import PooledHTTPXClient, StripeApi


def test_racing_threads_build_one_object() -> None:
    calls: list[int] = []
    start = threading.Barrier(16)

    @per_process
    def slow_client() -> object:
        calls.append(1)
        time.sleep(0.05)  # wide open window for a second build
        return object()

    def first_job() -> object:
        start.wait()
        return slow_client()

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda _: first_job(), range(16)))
    assert len(calls) == 1
    assert all(g is got[0] for g in got)


def http_client_of(gateway: StripeApi) -> PooledHTTPXClient:
    assert gateway._client is not None
    http = gateway._client._requestor._client
    assert isinstance(http, PooledHTTPXClient)
    return http


def test_every_thread_keeps_its_own_stripe_connection() -> None:
    """One httpx client per thread, each keeping the one connection its calls use:
    as many connections open as threads call at once, each pool scanned in O(1)."""
    http = http_client_of(
        StripeApi.from_settings(Settings(stripe_api_key="sk_test_unit_0123456789"))
    )
    start = threading.Barrier(8)

    def clients() -> tuple[Any, Any]:
        start.wait()
        return http._client, http._client

    with ThreadPoolExecutor(8) as pool:
        pairs = list(pool.map(lambda _: clients(), range(8)))
    assert all(first is second for first, second in pairs)  # the same client every call
    assert len({id(first) for first, _ in pairs}) == 8  # one per thread
    for client, _ in pairs:
        assert client._transport._pool._max_keepalive_connections == 1
        assert not client.is_closed

"""Per-process objects under the threads pool: built once however many jobs ask at once;
the Stripe client keeps a connection for every call that may run at once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cards.settings import Settings
from worker.process_local import per_process
from worker.stripe_api import MIN_KEPT_CONNECTIONS, PooledHTTPXClient, StripeApi


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


def kept_connections(gateway: StripeApi) -> int:
    assert gateway._client is not None
    http = gateway._client._requestor._client
    assert isinstance(http, PooledHTTPXClient) and http._client is not None
    pool: Any = http._client._transport
    return int(pool._pool._max_keepalive_connections)


def test_stripe_client_keeps_a_connection_per_concurrent_call() -> None:
    settings = Settings(stripe_api_key="sk_test_unit_0123456789", worker_concurrency=64)
    assert kept_connections(StripeApi.from_settings(settings)) == 64
    small = Settings(stripe_api_key="sk_test_unit_0123456789", worker_concurrency=2)
    assert kept_connections(StripeApi.from_settings(small)) == max(
        MIN_KEPT_CONNECTIONS, small.bulk_threads
    )

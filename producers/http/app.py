"""The HTTP API's ASGI app and its server: ``cards gateway`` runs :func:`serve`.

:func:`create_app` is an ASGI app factory (``uvicorn --factory
producers.http.app:create_app``): it checks the settings, refusing to start
(:class:`GatewayConfigError`) without a usable API key, and wires the routes to
a Celery app that fails fast, the result feed, the in-flight cap and the JSON
access log. :func:`serve` runs it on uvicorn (uvloop and httptools where
installed), in ``workers`` processes. The gateway is a producer: it never
imports Stripe or the worker. ``--dev-no-auth`` serves without keys, on
loopback only, in one process.
"""

from __future__ import annotations

import gc
import ipaddress
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import redis.asyncio
from celery import Celery
from fastapi import FastAPI

from cards.redis_urls import async_redis_client
from cards.results import ResultBackend
from cards.settings import Settings, get_settings
from producers.client import producer_app as default_producer_app
from producers.http import models
from producers.http.access_log import AccessLog, access_logger
from producers.http.auth import ApiKeys, InvalidApiKeys, api_key_dependency
from producers.http.dispatch import Dispatcher, fail_fast
from producers.http.errors import install_error_handlers
from producers.http.migrations import migrations_router
from producers.http.ownership import JobOwners
from producers.http.result_feed import CLIENT_NAME, ResultFeed
from producers.http.routes import add_routes
from producers.http.shedding import InFlight, InFlightLimit, redis_pool_size
from producers.http.tracing import trace_gateway

__all__ = [
    "APP_FACTORY",
    "GatewayConfigError",
    "create_app",
    "default_workers",
    "is_loopback_host",
    "serve",
]

#: The import path of :func:`create_app`, for ``uvicorn --factory`` and for workers.
APP_FACTORY: Final = "producers.http.app:create_app"
#: How long a worker process may take to start (import, build the app) on a busy host
#: before uvicorn's supervisor counts it as hung and replaces it.
WORKER_STARTUP_SECONDS: Final = 60
#: The result feed's reads (GET/MGET) give up after this long.
FEED_SOCKET_TIMEOUT_SECONDS: Final = 2


class GatewayConfigError(ValueError):
    """The gateway must not start with these settings; ``str()`` is one line for the operator."""


class _GatewayApp(FastAPI):
    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = models.tidy_openapi(super().openapi())
        return self.openapi_schema


def _api_keys(settings: Settings, dev_no_auth: bool) -> ApiKeys:
    """The configured keys; :class:`GatewayConfigError` if unusable, or none without
    ``dev_no_auth``."""
    try:
        keys = ApiKeys.parse(settings.gateway_api_keys)
    except InvalidApiKeys as exc:
        raise GatewayConfigError(str(exc)) from None
    if not keys and not dev_no_auth:
        raise GatewayConfigError(
            "CARDS_GATEWAY_API_KEYS is not set: the gateway needs at least one API key "
            "(or --dev-no-auth on a loopback --host, for development only)"
        )
    return keys


def create_app(
    settings: Settings | None = None,
    celery_app: Celery | None = None,
    *,
    owners: JobOwners | None = None,
    dev_no_auth: bool = False,
) -> FastAPI:
    """The gateway's ASGI app; :class:`GatewayConfigError` if it must not start.

    ``settings`` default to the environment's. ``celery_app`` (the producers'
    app by default) gets a short result backend retry policy (see
    :func:`producers.http.dispatch.fail_fast`). ``owners`` (Redis at
    ``CARDS_STATE_REDIS_URL`` by default) holds the job-id claims.
    """
    settings = settings if settings is not None else get_settings()
    require_api_key = api_key_dependency(_api_keys(settings, dev_no_auth), dev_no_auth)
    celery = fail_fast(celery_app or default_producer_app())
    feed = _result_feed(settings, celery) if settings.gateway_wait == "push" else None
    jobs = Dispatcher(
        celery,
        settings.gateway_max_wait_seconds,
        owners if owners is not None else JobOwners.from_settings(settings),
        feed,
        claims_on_broker=owners is None and settings.job_state_url == str(celery.conf.broker_url),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # What start-up built lives as long as the process: the collector leaves it
        # out of its full passes (each would scan it all, 30 ms here).
        gc.freeze()
        yield
        if feed is not None:
            await feed.close()
        await jobs.publisher.close()
        await jobs.owners.close()

    app = _GatewayApp(
        title="cards-worker gateway",
        version="1",
        description="Set a Stripe customer's default card (and assign and list cards) as jobs.",
        redirect_slashes=False,
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    in_flight = InFlight(settings.gateway_max_in_flight)
    add_routes(app, jobs, require_api_key, settings.gateway_max_body_bytes, in_flight)
    app.include_router(migrations_router(celery, require_api_key))
    app.add_middleware(InFlightLimit, in_flight=in_flight)
    if settings.gateway_access_log:
        app.add_middleware(AccessLog, logger=access_logger())
    trace_gateway(app, settings)
    return app


def _result_feed(settings: Settings, celery: Celery) -> ResultFeed:
    """The feed on ``celery``'s result backend: where its jobs' results are published
    (which ``settings`` need not name when the app is given)."""
    backend = ResultBackend(celery)
    url = str(celery.conf.result_backend)
    options = celery.conf.result_backend_transport_options or {}
    master_name = str(options.get("master_name", settings.sentinel_master))

    def new_client() -> redis.asyncio.Redis:
        return async_redis_client(
            url,
            master_name,
            socket_timeout=FEED_SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=FEED_SOCKET_TIMEOUT_SECONDS,
            socket_keepalive=True,
            client_name=CLIENT_NAME,
            max_connections=redis_pool_size(settings.gateway_max_in_flight),
        )

    return ResultFeed(new_client, backend.key, backend.decode)


def is_loopback_host(host: str) -> bool:
    """Does ``--host`` listen on loopback only? (Pure.)"""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def default_workers() -> int:
    """One process per core this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def serve(host: str, port: int, *, workers: int | None = None, dev_no_auth: bool = False) -> None:
    """Run the gateway on uvicorn until SIGINT/SIGTERM; :class:`GatewayConfigError` if refused.

    ``workers`` processes (default :func:`default_workers`) share the port, each
    with its own app. ``dev_no_auth`` (the command line's ``--dev-no-auth``,
    never a setting) serves without keys, in one process, and only on a loopback
    ``host``.
    """
    import uvicorn

    if dev_no_auth and not is_loopback_host(host):
        raise GatewayConfigError(
            "--dev-no-auth serves without keys, so only on a loopback --host (127.0.0.1, ::1)"
        )
    if workers is not None and workers < 1:
        raise GatewayConfigError("--workers must be at least 1")
    if dev_no_auth and workers not in (None, 1):
        raise GatewayConfigError("--dev-no-auth serves one process: leave out --workers")
    processes = 1 if dev_no_auth else workers or default_workers()
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "server_header": False,
        "log_level": "info",
        "access_log": False,  # the app writes its own (producers.http.access_log)
    }
    if processes == 1:
        app = create_app(get_settings(), dev_no_auth=dev_no_auth)
        if dev_no_auth:
            sys.stderr.write(
                "warning: the gateway runs WITHOUT authentication (dev-no-auth); never expose it\n"
            )
        uvicorn.run(app, **options)
        return
    _api_keys(get_settings(), dev_no_auth=False)  # refuse here, in one line, not per process
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        workers=processes,
        timeout_worker_healthcheck=WORKER_STARTUP_SECONDS,
        **options,
    )

"""The HTTP API's ASGI app and its server: ``cards gateway`` runs :func:`serve`.

:func:`create_app` is an ASGI app factory (``uvicorn --factory
producers.http.app:create_app``): it checks the settings, refusing to start
(:class:`GatewayConfigError`) without a usable API key, and wires the routes to
a Celery app that fails fast. The gateway is a producer: it never imports
Stripe or the worker. ``--dev-no-auth`` serves without keys, on loopback only.
"""

from __future__ import annotations

import ipaddress
import sys
from typing import Any

from celery import Celery
from fastapi import FastAPI

from cards.settings import Settings, get_settings
from producers.client import producer_app as default_producer_app
from producers.http import models
from producers.http.access_log import log_config
from producers.http.auth import ApiKeys, InvalidApiKeys, api_key_dependency
from producers.http.dispatch import Dispatcher, fail_fast
from producers.http.errors import install_error_handlers
from producers.http.migrations import migrations_router
from producers.http.ownership import JobOwners
from producers.http.routes import add_routes
from producers.http.tracing import trace_gateway

__all__ = ["GatewayConfigError", "create_app", "is_loopback_host", "serve"]


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
    jobs = Dispatcher(
        celery,
        settings.gateway_max_wait_seconds,
        owners if owners is not None else JobOwners.from_settings(settings),
    )
    app = _GatewayApp(
        title="cards-worker gateway",
        version="1",
        description="Set a Stripe customer's default card (and assign and list cards) as jobs.",
        redirect_slashes=False,
        docs_url="/docs",
        redoc_url=None,
    )
    install_error_handlers(app)
    add_routes(app, jobs, require_api_key, settings.gateway_max_body_bytes)
    app.include_router(migrations_router(celery, require_api_key))
    trace_gateway(app, settings)
    return app


def is_loopback_host(host: str) -> bool:
    """Does ``--host`` listen on loopback only? (Pure.)"""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(host: str, port: int, *, dev_no_auth: bool = False) -> None:
    """Run the gateway on uvicorn until SIGINT/SIGTERM; :class:`GatewayConfigError` if refused.

    ``dev_no_auth`` (the command line's ``--dev-no-auth``, never a setting) serves
    without keys, and only on a loopback ``host``.
    """
    import uvicorn

    if dev_no_auth and not is_loopback_host(host):
        raise GatewayConfigError(
            "--dev-no-auth serves without keys, so only on a loopback --host (127.0.0.1, ::1)"
        )
    app = create_app(get_settings(), dev_no_auth=dev_no_auth)
    if dev_no_auth:
        sys.stderr.write(
            "warning: the gateway runs WITHOUT authentication (dev-no-auth); never expose it\n"
        )
    uvicorn.run(
        app, host=host, port=port, server_header=False, log_level="info", log_config=log_config()
    )

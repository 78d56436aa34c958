"""The admin API under ``/_emulator/``: health, knobs, faults, ledger, captured requests,
reset, seed and customer reads, for tests, benchmarks and the demo.

No authentication: the server binds to loopback. Admin calls never count as Stripe
API calls. Admin errors are ``{"error": "message"}`` with status 400 (or 404).
Routes and JSON shapes: ``docs/emulator.md``; :mod:`stripe_emulator.admin_client`
is the client.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .config import ConfigError
from .errors import StripeError
from .faults import FaultSpecError, parse_faults
from .ids import request_id

if TYPE_CHECKING:
    from .app import Emulator

PREFIX = "/_emulator"
MAX_SEED_CUSTOMERS = 1_000_000
MAX_SEED_CARDS = 20
EMULATOR_KEY: web.AppKey[Emulator] = web.AppKey("emulator")


class AdminError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(payload, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers={"Request-Id": request_id()},
    )


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise AdminError(f"body must be JSON: {exc}") from None
    if not isinstance(data, dict):
        raise AdminError("body must be a JSON object")
    return data


def _flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise AdminError(f"{name} must be true or false")
    return value


def _int(data: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise AdminError(f"{name} must be an integer within [{low}, {high}]")
    return value


def _account(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.startswith("acct_"):
        raise AdminError("account must be null or an 'acct_...' id")
    return value


def _emulator(request: web.Request) -> Emulator:
    return request.app[EMULATOR_KEY]


async def health(request: web.Request) -> web.Response:
    emulator = _emulator(request)
    counts = emulator.store.counts()
    return _json(
        {
            "status": "ok",
            "pid": os.getpid(),
            "uptime_s": round(time.time() - emulator.started, 3),
            "customers": counts["customers"],
            "accounts": counts["accounts"],
            "idempotency_keys": len(emulator.idempotency),
            "writes_in_flight": emulator.writes.in_flight(),
        }
    )


async def get_config(request: web.Request) -> web.Response:
    return _json(_emulator(request).config.to_json())


async def post_config(request: web.Request) -> web.Response:
    emulator = _emulator(request)
    patch = await _body(request)
    try:
        config = emulator.config.merged(patch)
    except ConfigError as exc:
        raise AdminError(str(exc)) from None
    emulator.apply_config(config, reseed="seed" in patch)
    return _json(config.to_json())


async def get_faults(request: web.Request) -> web.Response:
    return _json({"pending": _emulator(request).scripts.pending()})


async def post_faults(request: web.Request) -> web.Response:
    emulator = _emulator(request)
    data = await _body(request)
    customer = data.get("customer")
    if not isinstance(customer, str) or not customer:
        raise AdminError("customer must be a customer id")
    specs = data.get("faults")
    if not isinstance(specs, list) or not specs:
        raise AdminError("faults must be a non-empty list")
    method = data.get("method")
    path = data.get("path")
    if method is not None and method not in ("GET", "POST", "DELETE", "get", "post", "delete"):
        raise AdminError("method must be GET, POST or DELETE")
    if path is not None and (not isinstance(path, str) or not path.startswith("/v1/")):
        raise AdminError("path must start with /v1/")
    try:
        faults = parse_faults(specs)
    except FaultSpecError as exc:
        raise AdminError(str(exc)) from None
    script = emulator.scripts.add(customer, faults, method=method, path=path)
    return _json({"queued": script.to_json(), "pending": emulator.scripts.pending()})


async def delete_faults(request: web.Request) -> web.Response:
    emulator = _emulator(request)
    emulator.scripts.clear(request.query.get("customer") or None)
    return _json({"pending": emulator.scripts.pending()})


async def get_ledger(request: web.Request) -> web.Response:
    query = request.query
    events = query.get("events", "1").lower() not in ("0", "false", "no")
    try:
        since = int(query.get("since", "0"))
    except ValueError:
        raise AdminError("since must be an integer") from None
    return _json(_emulator(request).ledger.to_json(events=events, since=since))


async def get_requests(request: web.Request) -> web.Response:
    return _json({"requests": list(_emulator(request).captured)})


async def post_reset(request: web.Request) -> web.Response:
    data = await _body(request)
    _emulator(request).reset(data=_flag(data, "data"), config=_flag(data, "config"))
    return _json({"status": "ok"})


async def post_seed(request: web.Request) -> web.Response:
    data = await _body(request)
    count = _int(data, "customers", 1, 0, MAX_SEED_CUSTOMERS)
    cards = _int(data, "cards_per_customer", 2, 0, MAX_SEED_CARDS)
    account = _account(data.get("account"))
    seeded = _emulator(request).store.account(account).seed(count, cards)
    return _json(seeded)


async def get_customer(request: web.Request) -> web.Response:
    emulator = _emulator(request)
    account = _account(request.query.get("account"))
    data = emulator.store.account(account)
    try:
        cus = data.customer(request.match_info["id"])
    except StripeError as exc:
        raise AdminError(exc.message, status=404) from None
    return _json(cus.to_json(frozenset({"sources"})))


AdminHandler = Callable[[web.Request], Awaitable[web.Response]]


def _guarded(handler: AdminHandler) -> AdminHandler:
    """Turn :class:`AdminError` into a JSON answer (no middleware: /v1 stays lean)."""

    async def wrapper(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except AdminError as exc:
            return _json({"error": str(exc)}, status=exc.status)

    return wrapper


def register_admin_routes(app: web.Application, emulator: Emulator) -> None:
    app[EMULATOR_KEY] = emulator

    def add(method: str, path: str, handler: AdminHandler) -> None:
        app.router.add_route(method, path, _guarded(handler))

    add("GET", f"{PREFIX}/health", health)
    add("GET", f"{PREFIX}/config", get_config)
    add("POST", f"{PREFIX}/config", post_config)
    add("GET", f"{PREFIX}/faults", get_faults)
    add("POST", f"{PREFIX}/faults", post_faults)
    add("DELETE", f"{PREFIX}/faults", delete_faults)
    add("GET", f"{PREFIX}/ledger", get_ledger)
    add("GET", f"{PREFIX}/requests", get_requests)
    add("POST", f"{PREFIX}/reset", post_reset)
    add("POST", f"{PREFIX}/seed", post_seed)
    add("GET", f"{PREFIX}/customers/{{id}}", get_customer)

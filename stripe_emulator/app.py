"""The aiohttp application: the /v1 request pipeline around the endpoint handlers.

Every /v1 request goes through fixed steps, in this order: count, authenticate,
account, rate limit, front-door faults, parameter validation, idempotency, customer
lock, then execution faults, latency and execution (saving the answer under the
key). The order decides which refusal a client sees and what gets saved; a refusal
waits the configured latency too, so it is never faster than a success. Per-request
work is O(1) apart from parsing and rendering. Each step: ``docs/emulator.md``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import random
import socket
import struct
import sys
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypedDict

from aiohttp import web

from . import forms, ids
from . import params as P
from .admin_api import register_admin_routes
from .batch_jobs import BatchJobs, register_batch_routes
from .config import EXPONENTIAL_JITTER_CAP, EmulatorConfig
from .endpoints import ROUTES, Call, Route
from .errors import (
    StripeError,
    account_access_denied,
    api_error,
    idempotency_key_in_use,
    idempotency_key_too_long,
    idempotency_mismatch,
    invalid_api_key,
    lock_timeout,
    no_api_key,
    permission_denied,
    rate_limited,
    unrecognized_url,
)
from .faults import Fault, FaultDice, FaultScripts, Script
from .idempotency import MAX_KEY_LENGTH, Entry, IdempotencyCache, Outcome, fingerprint
from .ledger import Event, Ledger
from .limits import CUSTOMER_UPDATE, GLOBAL, RateLimiter, WriteTracker
from .store import Store

STRIPE_VERSION = "2025-03-31.basil"
"""Echoed in ``Stripe-Version`` when the request does not name a version."""
HANG_POLL_SECONDS = 0.1
"""How often a held (``timeout_after_commit``) connection checks whether the client left."""
MAX_BODY_BYTES = 1024 * 1024
JSON_CONTENT_TYPE = "application/json"
MAX_CAPTURED = 10_000
"""Exchanges kept when ``capture_requests`` is on (oldest dropped)."""
CAPTURED_HEADERS = frozenset(
    {"content-type", "idempotency-key", "stripe-account", "stripe-version", "user-agent"}
)
"""Request headers a capture keeps: never ``Authorization``."""


class Captured(TypedDict):
    method: str
    path: str
    query: str
    body: str
    headers: dict[str, str]
    status: int
    response: str


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(payload: Any) -> bytes:
    return _dumps(payload).encode()


@dataclass(slots=True)
class _Ctx:
    """Per-request facts the pipeline's steps share."""

    request_id: str
    t_start: float
    route: Route
    path: str
    account: str | None
    customer: str | None
    idempotency_key: str | None
    stripe_version: str
    request: web.Request
    raw: str
    #: The front-door fault that held the request back (``late_arrival``), if any.
    held_by: str | None = None


class Emulator:
    """State plus the request pipeline. One instance per server process."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.initial_config = config
        self.config = config
        self.store = Store()
        self.ledger = Ledger()
        self.idempotency = IdempotencyCache(config.idempotency_ttl_seconds)
        self.limiter = RateLimiter()
        self.writes = WriteTracker()
        self.scripts = FaultScripts()
        self.dice = FaultDice(config.seed)
        self._latency_rng = random.Random(config.seed)
        self._fault_routes: frozenset[str] = frozenset()
        self._latency = 0.0
        self._jitter = 0.0
        self.started = time.time()
        self.captured: deque[Captured] = deque(maxlen=MAX_CAPTURED)
        self.batch_jobs: BatchJobs | None = None  # set by build_app
        self.apply_config(config, reseed=False)

    # ------------------------------------------------------------------ config

    def apply_config(self, config: EmulatorConfig, *, reseed: bool) -> None:
        self.config = config
        if self.batch_jobs is not None:
            self.batch_jobs.lost_uploads = 0  # batch_lose_uploads counts from now
        self.idempotency.ttl = config.idempotency_ttl_seconds
        self.limiter.configure(
            {GLOBAL: config.rate_limit_global, CUSTOMER_UPDATE: config.rate_limit_customer_update}
        )
        self.dice.set_rates(config.faults)
        if reseed:
            self.dice.reseed(config.seed)
            self._latency_rng.seed(config.seed)
        self._fault_routes = frozenset(config.fault_paths)
        self._latency = config.latency_ms / 1000.0
        self._jitter = config.jitter_ms / 1000.0

    def reset(self, *, data: bool, config: bool) -> None:
        self.ledger.reset()
        self.captured.clear()
        self.scripts.clear()
        if data:
            self.store.clear()
            self.idempotency.clear()
            if self.batch_jobs is not None:
                self.batch_jobs.clear()
        if config:
            self.apply_config(self.initial_config, reseed=True)
        self.limiter.reset()

    def _delay(self) -> float:
        delay = self._latency
        jitter = self._jitter
        if jitter > 0:
            if self.config.jitter_distribution == "exponential":
                delay += min(
                    self._latency_rng.expovariate(1.0 / jitter), jitter * EXPONENTIAL_JITTER_CAP
                )
            else:
                delay += self._latency_rng.random() * jitter
        return delay

    # ---------------------------------------------------------------- pipeline

    def handler_for(self, route: Route) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self.handle(request, route)

        return handler

    async def handle(self, request: web.Request, route: Route) -> web.StreamResponse:
        t_start = time.time()
        headers = request.headers
        if route.method == "POST":
            raw = (await request.read()).decode("utf-8", "replace")
            idempotency_key = headers.get("Idempotency-Key") or None
        else:
            raw = request.rel_url.raw_query_string
            idempotency_key = None
        parse_error: StripeError | None = None
        try:
            pairs = forms.parse_pairs(raw)
        except StripeError as exc:
            pairs, parse_error = [], exc
        customer: str | None = None
        if route.customer_from == "path":
            customer = request.match_info["id"]
        elif route.customer_from == "param":
            for name, value in pairs:
                if name == "customer":
                    customer = value
        ctx = _Ctx(
            request_id=ids.request_id(),
            t_start=t_start,
            route=route,
            path=request.path,
            account=headers.get("Stripe-Account") or None,
            customer=customer,
            idempotency_key=idempotency_key,
            stripe_version=headers.get("Stripe-Version") or STRIPE_VERSION,
            request=request,
            raw=raw,
        )
        self.ledger.request(customer)
        # Steps 2-7: everything up to claiming the idempotency key is synchronous.
        fault: Fault | None = None
        script: Script | None = None
        entry: Entry | None = None
        try:
            api_key = self._authenticate(headers.get("Authorization"))
            account = ctx.account
            if account is not None and not account.startswith("acct_"):
                raise account_access_denied(account)
            limiter = self.limiter
            if not limiter.allow(GLOBAL, account) or (
                route.limit is not None and not limiter.allow(route.limit, account)
            ):
                raise rate_limited()
            fault, script = self._pick_fault(ctx)
            if fault is not None and fault.front_door:
                if script is not None:
                    self.scripts.consume(script)
                if fault.kind != "late_arrival":
                    return await self._front_door_fault(request, ctx, fault, api_key)
                self.ledger.fault(fault.kind)
                await self._arrive_late(request)
                ctx.held_by, fault, script = fault.kind, None, None
            if parse_error is not None:
                raise parse_error
            params = P.validate(route.schema, forms.decode(pairs))
            if idempotency_key is not None:
                if len(idempotency_key) > MAX_KEY_LENGTH:
                    raise idempotency_key_too_long()
                outcome, entry = self.idempotency.begin(
                    account, idempotency_key, fingerprint("POST", ctx.path, pairs), ctx.request_id
                )
                if outcome is Outcome.REPLAY:
                    return await self._replay(ctx, entry)
                if outcome is Outcome.MISMATCH:
                    entry = None
                    raise idempotency_mismatch(idempotency_key)
                if outcome is Outcome.IN_FLIGHT:
                    entry = None
                    raise idempotency_key_in_use(idempotency_key)
        except StripeError as err:
            return await self._refuse(ctx, err)
        # Step 8: per-customer write lock.
        tracked = route.write and customer is not None
        if tracked:
            assert customer is not None
            count = self.writes.enter(ctx.account, customer)
            self.ledger.concurrency(customer, count)
            if count > 1 and self.config.lock_timeout:
                self.writes.leave(ctx.account, customer)
                if entry is not None and idempotency_key is not None:
                    self.idempotency.abandon(ctx.account, idempotency_key, entry)
                self.ledger.lock_timeouts += 1
                return await self._refuse(ctx, lock_timeout(customer))
        # Step 9: execution faults, latency, execution.
        if fault is not None and script is not None:
            self.scripts.consume(script)
        if fault is not None:
            self.ledger.fault(fault.kind)
        committed = False
        try:
            delay = self._delay()
            if delay > 0:
                await asyncio.sleep(delay)
            status, body, extra, applied = self._execute(ctx, params, request, fault)
            if entry is not None:
                self.idempotency.complete(entry, status, body, extra)
            committed = True
        finally:
            if tracked:
                assert customer is not None
                self.writes.leave(ctx.account, customer)
            if not committed and entry is not None and idempotency_key is not None:
                self.idempotency.abandon(ctx.account, idempotency_key, entry)
        kind = fault.kind if fault is not None else None
        if kind == "timeout_after_commit":
            self._finish(ctx, None, applied=applied, replayed=False, fault=kind)
            await self._hang(request)
            return web.Response(status=status)
        self._finish(ctx, status, applied=applied, replayed=False, fault=kind)
        return self._response(ctx, status, body, extra)

    def _authenticate(self, header: str | None) -> str:
        if not header:
            raise no_api_key()
        scheme, _, credential = header.strip().partition(" ")
        scheme = scheme.lower()
        credential = credential.strip()
        if scheme == "basic":
            try:
                credential = base64.b64decode(credential, validate=True).decode().partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                raise invalid_api_key(credential) from None
        elif scheme != "bearer":
            raise invalid_api_key(header)
        if not credential:
            raise no_api_key()
        expected = self.config.api_key
        if expected is not None:
            if credential != expected:
                raise invalid_api_key(credential)
        elif not credential.startswith("sk_test_"):
            raise invalid_api_key(credential)
        return credential

    def _pick_fault(self, ctx: _Ctx) -> tuple[Fault | None, Script | None]:
        customer = ctx.customer
        route = ctx.route
        if customer is not None and self.scripts:
            found = self.scripts.next_for(customer, route.method, route.template, ctx.path)
            if found is not None:
                script, fault = found
                return fault, script
        if self.dice.armed and route.key in self._fault_routes:
            return self.dice.draw(), None
        return None, None

    def _execute(
        self, ctx: _Ctx, params: dict[str, Any], request: web.Request, fault: Fault | None
    ) -> tuple[int, bytes, tuple[tuple[str, str], ...], bool]:
        kind = fault.kind if fault is not None else None
        extra: tuple[tuple[str, str], ...] = ()
        applied = False
        if kind == "error_500":
            status, payload = 500, api_error().body(ctx.request_id)
        else:
            data = self.store.account(ctx.account)
            try:
                status, payload = ctx.route.handler(Call(data, request.match_info, params))
                applied = status < 400
            except StripeError as err:
                status, payload = err.status, err.body(ctx.request_id)
                extra = tuple(err.headers.items())
            except Exception:
                traceback.print_exc(file=sys.stderr)
                status, payload = 500, api_error().body(ctx.request_id)
            if kind == "error_500_after_commit":
                status, payload = 500, api_error().body(ctx.request_id)
        if fault is not None and fault.should_retry is not None:
            extra += (("Stripe-Should-Retry", "true" if fault.should_retry else "false"),)
        return status, dumps(payload), extra, applied

    # --------------------------------------------------------------- answers

    def _response(
        self,
        ctx: _Ctx,
        status: int,
        body: bytes,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> web.Response:
        headers = {
            "Content-Type": JSON_CONTENT_TYPE,
            "Request-Id": ctx.request_id,
            "Stripe-Version": ctx.stripe_version,
        }
        if ctx.idempotency_key is not None:
            headers["Idempotency-Key"] = ctx.idempotency_key
        for name, value in extra:
            headers[name] = value
        if self.config.capture_requests:
            self.captured.append(captured(ctx, status, body))
        return web.Response(body=body, status=status, headers=headers)

    async def _wait(self) -> None:
        delay = self._delay()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _refuse(self, ctx: _Ctx, err: StripeError) -> web.Response:
        await self._wait()
        self._finish(ctx, err.status, applied=False, replayed=False, fault=None)
        body = dumps(err.body(ctx.request_id))
        return self._response(ctx, err.status, body, tuple(err.headers.items()))

    async def _replay(self, ctx: _Ctx, entry: Entry) -> web.Response:
        await self._wait()
        self._finish(ctx, entry.status, applied=False, replayed=True, fault=None)
        extra = (
            *entry.headers,
            ("Idempotent-Replayed", "true"),
            ("Original-Request", entry.request_id),
        )
        return self._response(ctx, entry.status, entry.body, extra)

    async def _front_door_fault(
        self, request: web.Request, ctx: _Ctx, fault: Fault, api_key: str
    ) -> web.StreamResponse:
        kind = fault.kind
        self.ledger.fault(kind)
        await self._wait()
        if kind == "connection_reset":
            self._finish(ctx, None, applied=False, replayed=False, fault=kind)
            reset_connection(request)
            return web.Response(status=500)
        if kind == "rate_limit":
            err = rate_limited()
        elif kind == "conflict_409":
            err = idempotency_key_in_use(ctx.idempotency_key or "")
        elif kind == "error_401":
            err = invalid_api_key(api_key)
        else:
            err = permission_denied(api_key, ctx.account)
        if fault.should_retry is not None:
            err.headers["Stripe-Should-Retry"] = "true" if fault.should_retry else "false"
        self._finish(ctx, err.status, applied=False, replayed=False, fault=kind)
        return self._response(
            ctx, err.status, dumps(err.body(ctx.request_id)), tuple(err.headers.items())
        )

    async def _arrive_late(self, request: web.Request) -> None:
        """Hold a request until its client has left (or for ``hang_seconds``, then close
        it), then ``late_arrival_seconds`` more: it reaches Stripe after the client gave up."""
        await self._hang(request)
        await asyncio.sleep(self.config.late_arrival_seconds)

    async def _hang(self, request: web.Request) -> None:
        """Hold the connection without answering, then close it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.hang_seconds
        while True:
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                transport.close()
                return
            await asyncio.sleep(min(HANG_POLL_SECONDS, remaining))

    def _finish(
        self, ctx: _Ctx, status: int | None, *, applied: bool, replayed: bool, fault: str | None
    ) -> None:
        ledger = self.ledger
        ledger.response(status)
        route = ctx.route
        if route.write:
            event: Event = {
                "request_id": ctx.request_id,
                "t_start": ctx.t_start,
                "t_end": time.time(),
                "method": route.method,
                "path": ctx.path,
                "account": ctx.account,
                "customer": ctx.customer,
                "idempotency_key": ctx.idempotency_key,
                "status": status,
                "applied": applied,
                "replayed": replayed,
                "fault": fault or ctx.held_by,
            }
            ledger.write(event)
        if self.config.log_requests:
            sys.stderr.write(
                f"{ctx.request_id} {route.method} {ctx.path} -> {status}"
                f"{' replayed' if replayed else ''}{f' fault={fault}' if fault else ''}"
                f" ({(time.time() - ctx.t_start) * 1000:.1f} ms)\n"
            )

    async def unrecognized(self, request: web.Request) -> web.StreamResponse:
        err = unrecognized_url(request.method, request.path)
        rid = ids.request_id()
        return web.Response(
            body=dumps(err.body(rid)),
            status=err.status,
            headers={"Content-Type": JSON_CONTENT_TYPE, "Request-Id": rid},
        )


def captured(ctx: _Ctx, status: int, body: bytes) -> Captured:
    """One /v1 exchange as it went over the wire (``capture_requests``)."""
    request = ctx.request
    post = request.method == "POST"
    return {
        "method": request.method,
        "path": request.path,
        "query": request.rel_url.raw_query_string,
        "body": ctx.raw if post else "",
        "headers": {k: v for k, v in request.headers.items() if k.lower() in CAPTURED_HEADERS},
        "status": status,
        "response": body.decode("utf-8", "replace"),
    }


def reset_connection(request: web.Request) -> None:
    """Abort the TCP connection with an RST (SO_LINGER 0), sending no response."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def build_app(emulator: Emulator) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    for route in ROUTES:
        app.router.add_route(route.method, route.template, emulator.handler_for(route))
    app.router.add_route("*", "/v1/{tail:.*}", emulator.unrecognized)
    emulator.batch_jobs = register_batch_routes(app, emulator)
    register_admin_routes(app, emulator)
    return app

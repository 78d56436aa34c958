"""A cap on the requests one gateway process serves at once, and its readiness.

Past ``CARDS_GATEWAY_MAX_IN_FLIGHT`` requests in flight, a new one is answered
503 at once, in the envelope's shape, with ``Retry-After``, instead of queueing
behind the others. The process is not ready (``/readyz`` 503) while it is
saturated, so a load balancer sends elsewhere. ``/healthz`` (liveness) and
``/readyz`` are never shed and never counted. A pure ASGI middleware: one
counter, no thread, no Redis.
"""

from __future__ import annotations

import json
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from producers.http.errors import UNAVAILABLE, error_body

__all__ = [
    "NEVER_SHED",
    "RETRY_AFTER_SECONDS",
    "InFlight",
    "InFlightLimit",
    "redis_pool_size",
    "shed_body",
]

#: Paths a probe calls: answered even at the cap, and not counted.
NEVER_SHED: Final = frozenset({"/healthz", "/readyz"})
#: What a shed request's ``Retry-After`` says: a waiting request frees its slot within
#: about a Stripe call, so a second is enough to find room again.
RETRY_AFTER_SECONDS: Final = 1


def redis_pool_size(cap: int) -> int:
    """The most connections each asyncio Redis client of a gateway process may open
    (sends, claims, result reads) under an in-flight cap of ``cap``: two a request (a
    wake-up's read and the deadline's may overlap), so that no burst up to the cap
    finds the pool full. redis-py's own bound (100) fails the command past it. They
    open as needed and stay open for reuse. Pure."""
    return 2 * cap


def shed_body(cap: int) -> bytes:
    """The body of a shed request: the envelope's shape. Pure."""
    message = (
        f"the gateway is at capacity ({cap} requests in flight); "
        f"retry after {RETRY_AFTER_SECONDS} s"
    )
    return json.dumps(error_body(message), separators=(",", ":")).encode()


class InFlight:
    """One process's requests in flight, against its cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.count = 0

    @property
    def saturated(self) -> bool:
        return self.count >= self.cap


class InFlightLimit:
    """ASGI middleware: count the requests in flight and shed those past the cap (503)."""

    def __init__(self, app: ASGIApp, in_flight: InFlight) -> None:
        self.app = app
        self.in_flight = in_flight
        body = shed_body(in_flight.cap)
        self._body = body
        self._headers: list[tuple[bytes, bytes]] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in NEVER_SHED:
            await self.app(scope, receive, send)
            return
        in_flight = self.in_flight
        if in_flight.saturated:
            start = {"type": "http.response.start", "status": UNAVAILABLE, "headers": self._headers}
            await send(start)
            await send({"type": "http.response.body", "body": self._body})
            return
        in_flight.count += 1
        try:
            await self.app(scope, receive, send)
        finally:
            in_flight.count -= 1

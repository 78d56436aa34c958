"""The gateway's access log: one JSON line per request, never a query string.

An API key or a customer id sent in a query string must never land in a log,
so a line holds the path only: ``{"ts", "method", "path", "status", "ms"}``.
A pure ASGI middleware writes it to the ``cards.gateway.access`` logger (on
stdout unless configured otherwise); ``CARDS_GATEWAY_ACCESS_LOG=false`` leaves
it out. uvicorn's own access log stays off.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ACCESS_LOGGER", "AccessLog", "access_line", "access_logger"]

ACCESS_LOGGER = "cards.gateway.access"


def access_line(ts: float, method: str, path: str, status: int, seconds: float) -> str:
    """One access log line, JSON; ``path`` never carries the query string. Pure."""
    return json.dumps(
        {
            "ts": round(ts, 3),
            "method": method,
            "path": path.split("?", 1)[0],
            "status": status,
            "ms": round(seconds * 1000, 2),
        },
        separators=(",", ":"),
    )


def access_logger() -> logging.Logger:
    """The access logger, writing bare lines to stdout unless a handler is configured."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


class AccessLog:
    """Log every HTTP request ``app`` answers, as :func:`access_line`."""

    def __init__(self, app: ASGIApp, logger: logging.Logger) -> None:
        self.app = app
        self.logger = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless the app answers

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.logger.info(
                access_line(
                    time.time(),
                    scope["method"],
                    scope["path"],
                    status,
                    time.perf_counter() - started,
                )
            )

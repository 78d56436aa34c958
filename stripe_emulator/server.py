"""Running the emulator: bind, announce readiness, serve until SIGTERM/SIGINT.

Readiness is one line on stdout, ``STRIPE_EMULATOR_READY <url>``, printed only once the
socket accepts connections (with ``--port 0`` it carries the port the OS picked).
Nothing else is written to stdout; diagnostics go to stderr. On SIGTERM or SIGINT the
listening socket closes and in-flight requests get :data:`SHUTDOWN_GRACE_SECONDS` to
finish (held ``timeout_after_commit`` connections are dropped), then the process exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import TextIO

from aiohttp import web

from . import READY_PREFIX
from .app import Emulator, build_app
from .config import EmulatorConfig

SHUTDOWN_GRACE_SECONDS = 1.0
LISTEN_BACKLOG = 1024
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def format_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


async def serve(
    config: EmulatorConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 12111,
    ready_out: TextIO | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set (or SIGTERM/SIGINT when ``stop`` is not given)."""
    emulator = Emulator(config)
    app = build_app(emulator)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE_SECONDS
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG, reuse_address=True)
    try:
        await site.start()
        bound_port = int(runner.addresses[0][1])
        if host not in LOOPBACK_HOSTS:
            sys.stderr.write(f"stripe-emulator: warning: listening on non-loopback {host}\n")
        out = ready_out if ready_out is not None else sys.stdout
        out.write(f"{READY_PREFIX} {format_url(host, bound_port)}\n")
        out.flush()
        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def run(config: EmulatorConfig, *, host: str, port: int) -> None:
    asyncio.run(serve(config, host=host, port=port))

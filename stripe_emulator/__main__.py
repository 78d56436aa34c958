"""Command line: ``python -m stripe_emulator`` (console script ``stripe-emulator``).

``serve`` (the default) binds to loopback unless ``--host`` says otherwise, prints
``STRIPE_EMULATOR_READY <url>`` on stdout when ready and exits 0 on SIGTERM/SIGINT.
The API key may also come from ``STRIPE_EMULATOR_API_KEY`` (keeps it out of ``ps``).
``seed`` asks a running emulator to create customers and writes their ids as JSON.
Usage: ``stripe-emulator --help`` and ``docs/emulator.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from .config import (
    DEFAULT_FAULT_PATHS,
    DEFAULT_HANG_SECONDS,
    DEFAULT_IDEMPOTENCY_TTL_SECONDS,
    DEFAULT_LATE_ARRIVAL_SECONDS,
    JITTER_DISTRIBUTIONS,
    ConfigError,
    EmulatorConfig,
    parse_fault_rate,
)
from .faults import FAULT_KINDS

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 12111
API_KEY_ENV = "STRIPE_EMULATOR_API_KEY"


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stripe-emulator",
        description="Local emulator of the Stripe API subset cards-worker uses.",
        epilog="Subcommand: 'stripe-emulator seed --help'. Fault kinds: " + ", ".join(FAULT_KINDS),
    )
    p.add_argument("--host", default=DEFAULT_HOST, help="bind address (default: %(default)s)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--jitter-distribution", choices=JITTER_DISTRIBUTIONS, default="uniform")
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV), help="accept only this key")
    p.add_argument("--seed", type=int, default=None, help="seed for faults and jitter")
    p.add_argument("--rate-limit-global", type=float, default=0.0, metavar="RPS")
    p.add_argument("--rate-limit-customer-update", type=float, default=0.0, metavar="RPS")
    p.add_argument("--no-lock-timeout", action="store_true", help="allow concurrent writes")
    p.add_argument(
        "--fault",
        action="extend",
        nargs="+",
        default=[],
        metavar="KIND=RATE",
        help="random fault probabilities, e.g. --fault error_500=0.1 rate_limit=0.05",
    )
    p.add_argument(
        "--fault-path",
        action="append",
        default=None,
        metavar="'METHOD /v1/...'",
        help=f"route random faults apply to (default: {DEFAULT_FAULT_PATHS[0]})",
    )
    p.add_argument("--hang-seconds", type=float, default=DEFAULT_HANG_SECONDS)
    p.add_argument("--late-arrival-seconds", type=float, default=DEFAULT_LATE_ARRIVAL_SECONDS)
    p.add_argument("--idempotency-ttl-seconds", type=float, default=DEFAULT_IDEMPOTENCY_TTL_SECONDS)
    p.add_argument("--log-requests", action="store_true", help="one stderr line per request")
    p.add_argument(
        "--capture-requests",
        action="store_true",
        help="keep each /v1 exchange for GET /_emulator/requests",
    )
    return p


def _seed_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stripe-emulator seed", description="Seed a running emulator with customers."
    )
    p.add_argument("--url", default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}")
    p.add_argument("--customers", type=int, default=100)
    p.add_argument("--cards-per-customer", type=int, default=2)
    p.add_argument("--account", default=None)
    p.add_argument("--out", default="-", help="output file (default: stdout)")
    return p


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    rates: dict[str, float] = {}
    for text in args.fault:
        kind, rate = parse_fault_rate(text)
        rates[kind] = rate
    return EmulatorConfig(
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        jitter_distribution=args.jitter_distribution,
        faults=rates,
        fault_paths=tuple(args.fault_path) if args.fault_path else DEFAULT_FAULT_PATHS,
        rate_limit_global=args.rate_limit_global,
        rate_limit_customer_update=args.rate_limit_customer_update,
        lock_timeout=not args.no_lock_timeout,
        hang_seconds=args.hang_seconds,
        late_arrival_seconds=args.late_arrival_seconds,
        idempotency_ttl_seconds=args.idempotency_ttl_seconds,
        seed=args.seed,
        log_requests=args.log_requests,
        capture_requests=args.capture_requests,
        api_key=args.api_key or None,
    )


def _serve(argv: Sequence[str]) -> int:
    parser = _serve_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        parser.error(str(exc))
    from .server import run

    run(config, host=args.host, port=args.port)
    return 0


def _seed(argv: Sequence[str]) -> int:
    from .admin_client import EmulatorAdmin

    args = _seed_parser().parse_args(argv)
    with EmulatorAdmin(args.url) as admin:
        customers = admin.seed(args.customers, args.cards_per_customer, args.account)
    text = json.dumps(customers, indent=2)
    if args.out == "-":
        sys.stdout.write(text + "\n")
    else:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        sys.stderr.write(f"seeded {len(customers)} customers -> {args.out}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "seed":
        return _seed(args[1:])
    if args and args[0] == "serve":
        args = args[1:]
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())

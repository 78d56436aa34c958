"""A local Stripe API emulator for cards-worker's tests, benchmarks and demo.

Start it with ``python -m stripe_emulator`` (see ``README.md`` beside this file), or from
Python with :func:`stripe_emulator.process.run_emulator`; drive its knobs with
:class:`stripe_emulator.admin_client.EmulatorAdmin`. Importing this package is cheap: the
server (aiohttp) is only imported by the modules that run it. Internals: ``docs/emulator.md``.

Modules:
    __main__: the command line, ``stripe-emulator [serve]`` and ``stripe-emulator seed``
    admin_api: the admin HTTP API under ``/_emulator/`` (knobs, faults, ledger, seed)
    admin_client: a synchronous client for the admin API (tests, benchmarks, demo)
    app: the aiohttp application, the /v1 request pipeline around the handlers
    batch_jobs: Stripe's Batch Jobs API (preview): create, upload, run, output
    card_numbers: card brands, Luhn check, fingerprints and Stripe's test tokens
    config: the runtime knobs, settable at start and live
    endpoints: the emulated /v1 routes, their parameter schemas and handlers
    errors: Stripe-shaped API errors and their exact messages
    faults: injected faults, drawn at random or scripted per customer
    forms: decoding Stripe's bracketed form encoding
    idempotency: Stripe's idempotency layer for POST requests
    ids: object ids shaped like Stripe's
    ledger: what the emulator saw and did, for exactly-once and pacing assertions
    limits: rate-limit token buckets and per-customer write-concurrency tracking
    params: per-endpoint parameter schemas and their validation
    process: the emulator as a subprocess (``run_emulator``)
    resources: the emulated Stripe objects and their JSON renderings
    server: bind, announce readiness, serve until SIGTERM/SIGINT
    store: in-memory state, one ``AccountData`` per ``Stripe-Account``
"""

READY_PREFIX = "STRIPE_EMULATOR_READY"
"""First word of the line the server prints on stdout once it accepts connections."""

__all__ = ["READY_PREFIX"]

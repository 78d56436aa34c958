"""A local Stripe API emulator for cards-worker's tests, benchmarks and demo.

Start it with ``python -m stripe_emulator`` (see ``README.md`` beside this file), or from
Python with :func:`stripe_emulator.process.run_emulator`; drive its knobs with
:class:`stripe_emulator.admin.EmulatorAdmin`. Importing this package is cheap: the server
(aiohttp) is only imported by the modules that run it.
"""

READY_PREFIX = "STRIPE_EMULATOR_READY"
"""First word of the line the server prints on stdout once it accepts connections."""

__all__ = ["READY_PREFIX"]

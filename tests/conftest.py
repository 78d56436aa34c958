"""Marks every test under tests/integration as ``integration`` (real processes) and
gives the xdist groups; shares Stripe's OpenAPI description (``stripe_spec``).

``make test`` runs the suite on two xdist workers with ``--dist loadgroup``: each
worker has its own session fixtures (Redis, emulator, worker, all on free ports).
An integration module runs whole on one worker, so its module-scoped processes start
once; the chaos scenarios run one after another on one worker, never two at once (each
runs several workers and breaks things on a clock). A test's own ``xdist_group`` mark
(e.g. ``"rabbitmq"``) wins over both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stripe_openapi import StripeSpec, load_spec, missing_reason

INTEGRATION_DIR = Path(__file__).parent / "integration"
CHAOS_DIR = Path(__file__).parent / "chaos"


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = None
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)
            group = item.path.name
        elif CHAOS_DIR in item.path.parents:
            group = "chaos"
        if group is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def stripe_spec() -> StripeSpec:
    """Stripe's OpenAPI description (loaded once); skips, naming the path, without it."""
    spec = load_spec()
    if spec is None:
        pytest.skip(missing_reason())
    return spec

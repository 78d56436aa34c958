"""Marks every test under tests/integration as ``integration`` (real processes) and
gives the xdist groups; shares Stripe's OpenAPI description (``stripe_spec``) and one
private RabbitMQ node (``rabbit_node``, with its management API; each test on it takes
a vhost of its own, ``harness.rabbitmq.own_vhost``).

``make test`` runs the suite on two xdist workers with ``--dist loadgroup``: each
worker has its own session fixtures (Redis, emulator, worker, all on free ports).
An integration module runs whole on one worker, so its module-scoped processes start
once; the chaos scenarios run one after another on one worker. A test's own
``xdist_group`` mark wins over both: every test on the RabbitMQ node is in
``"rabbitmq"``, so the node starts once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.rabbitmq import RabbitNode, run_rabbit_node
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


@pytest.fixture(scope="session")
def rabbit_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """One private RabbitMQ node for the session (chaos R2 restarts it)."""
    with run_rabbit_node(tmp_path_factory.mktemp("rabbitmq"), management=True) as node:
        yield node

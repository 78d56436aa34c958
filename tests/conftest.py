"""Marks every test under tests/integration as ``integration`` (real processes);
shares Stripe's OpenAPI description (``stripe_spec``) and one private RabbitMQ node
(``rabbit_node``, with its management API; each test on it takes a vhost of its own,
``harness.rabbitmq.own_vhost``).

``make test`` runs the suite on two xdist workers with ``--dist loadfile``: each
worker has its own session fixtures (Redis, emulator, worker, RabbitMQ node, all on
free ports), and a test file runs whole on one worker, in order, so its
module-scoped processes start once and the chaos scenarios run one at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.rabbitmq import RabbitNode, run_rabbit_node
from tests.stripe_openapi import StripeSpec, load_spec, missing_reason

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)


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

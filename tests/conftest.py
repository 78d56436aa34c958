"""Marks every test under tests/integration as ``integration`` (real processes);
shares Stripe's OpenAPI description (``stripe_spec``) with every test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stripe_openapi import StripeSpec, load_spec, missing_reason

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stripe_spec() -> StripeSpec:
    """Stripe's OpenAPI description (loaded once); skips, naming the path, without it."""
    spec = load_spec()
    if spec is None:
        pytest.skip(missing_reason())
    return spec

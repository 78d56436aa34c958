"""The chaos scenarios R1-R5 at CI size (see tests/chaos/scenarios.py).

Each starts its own Redis, emulator and workers (R1, R2 and R5 also with RabbitMQ
as the broker: a vhost of their own on the session's private node, which R2
restarts); the emulator's ledger is the source of truth.
``CARDS_CHAOS_SIZE=full`` runs the issue's sizes instead (or ``make chaos`` and
``make chaos-rabbitmq``, which also write RELIABILITY.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.scenarios import KNOWN_BUGS, RABBITMQ_SCENARIOS, SCENARIOS, size_of

SIZE = os.environ.get("CARDS_CHAOS_SIZE", "ci")

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]


RUNS: list[object] = [(scenario, "redis") for scenario in sorted(SCENARIOS)]
RUNS += [
    pytest.param(
        scenario,
        "rabbitmq",
        marks=[pytest.mark.rabbitmq],
    )
    for scenario in RABBITMQ_SCENARIOS
]


@pytest.mark.parametrize(("scenario", "broker"), RUNS)
def test_scenario_holds(
    scenario: str, broker: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    size = size_of(SIZE, scenario, broker)
    if broker == "rabbitmq":
        size["rabbit_node"] = request.getfixturevalue("rabbit_node")
    outcome = SCENARIOS[scenario](tmp_path, **size)
    print(outcome.summary())
    # Bugs found and not fixed yet (scenarios.KNOWN_BUGS) make the run XFAIL with the
    # details; any other problem fails it.
    known = [bug.signature for bug in KNOWN_BUGS.get(scenario, ())]
    unknown = [p for p in outcome.problems if not any(k in p for k in known)]
    assert unknown == [], outcome.summary()
    assert outcome.doubled == [] and outcome.wrong_state == []
    if outcome.problems:
        pytest.xfail(f"known bug, not fixed yet: {outcome.summary()}")
    assert outcome.jobs == outcome.envelopes == outcome.ok > 0
    assert outcome.max_applied_per_job == 1

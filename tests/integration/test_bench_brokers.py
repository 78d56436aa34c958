"""The broker benchmark (RabbitMQ against Redis) runs at smoke size and prints its figures.

Only that it runs is asserted (see tests/integration/test_bench_p3_p4.py); its
RabbitMQ is a vhost of its own on the session's private node.
"""

from __future__ import annotations

import pytest

from harness.rabbitmq import RabbitNode, own_vhost
from tests.integration.test_bench_p3_p4 import figures, run_bench

pytestmark = [pytest.mark.rabbitmq]


def test_broker_benchmark_runs_at_smoke_size(rabbit_node: RabbitNode) -> None:
    with own_vhost(rabbit_node, "bench") as vhost:
        done = run_bench("bench.brokers", "--amqp-url", rabbit_node.url(vhost))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "machine: " in done.stdout
    assert "E2E    ratio RabbitMQ / Redis" in done.stdout
    result = figures(done)
    assert set(result["e2e"]) == set(result["p1"]) == {"redis", "rabbitmq"}
    assert result["ratio"]["e2e"] > 0 and result["ratio"]["p1"] > 0

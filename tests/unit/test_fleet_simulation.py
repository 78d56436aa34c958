"""The fleet simulation (bench/fleet_simulation.py) at CI size: the sizing formula, sane
figures, and a chart file. The 100-pod run is ``make fleet-simulation``."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from bench.fleet_simulation import FleetModel, draw, main, needed_pods, simulate


@pytest.mark.parametrize(
    ("rate", "latency", "concurrency", "pods"),
    [(100, 0.3, 64, 1), (100, 0.6, 64, 1), (2400, 0.3, 8, 90), (300, 0.3, 8, 12), (0, 0.3, 8, 0)],
)
def test_workers_needed_is_rate_times_latency_over_concurrency(
    rate: float, latency: float, concurrency: int, pods: int
) -> None:
    assert needed_pods(rate, latency, concurrency) == pods


def test_a_small_fleet_absorbs_its_burst_and_draws_the_chart(tmp_path: Path) -> None:
    model = replace(FleetModel.scaled(5), duration=300.0)
    run = simulate(model)
    figures = run.figures()
    assert figures["pods needed at the burst"] == needed_pods(
        model.burst_rate, model.latency_mean, model.concurrency
    )
    assert figures["max queue depth"] > model.burst_rate  # the burst outruns the fleet at first
    assert model.pod_start_seconds <= figures["scale-up lag (s)"] < model.burst_seconds
    assert math.isfinite(figures["queue drained after the burst (s)"])
    assert run.ready.max() <= model.max_pods and run.ready.min() >= model.min_pods
    # The limiter's bucket lets at most its burst above the budget, over any second.
    assert 0.5 < figures["peak Stripe budget use"] <= 1 + model.burst_tokens_seconds + 0.05
    assert (run.depth >= 0).all() and (run.busy >= 0).all()
    out = tmp_path / "fleet.png"
    draw(run, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_bad_fleet_size_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--max-pods", "0"])
    assert exit_info.value.code == 2
    assert "--max-pods must be at least 1" in capsys.readouterr().err

"""A simulated worker fleet under a burst: queue depth, autoscaling lag and Stripe budget use.

``python -m bench.fleet_simulation [--max-pods 100] [--out docs/fleet-simulation.png]``
(``make fleet-simulation``). A time-stepped model of docs/scaling.md: jobs arrive (Poisson),
wait on the queue, and run on ready pods' slots (``concurrency`` each) when the shared Stripe
budget (a token bucket) has a token; a call takes a random Stripe latency. KEDA polls the
queue length every ``poll_seconds`` and asks for ``ceil(depth / list_length)`` pods more than
those busy; the HPA adds at most max(4, 100 %) pods per 15 s, and a new pod is ready
``pod_start_seconds`` later. Prints the figures, draws the chart. No Redis, no Celery: a
model, to size a fleet and read its lags, not a measurement.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import numpy as np

__all__ = ["FleetModel", "Run", "needed_pods", "simulate"]

DT: Final = 0.1  # seconds per step
HPA_PERIOD_SECONDS: Final = 15.0


def needed_pods(rate: float, latency: float, concurrency: int) -> int:
    """Pods that keep ``rate`` jobs/s in flight at ``latency`` s each. (Pure.)"""
    return math.ceil(rate * latency / concurrency)


@dataclass(frozen=True)
class FleetModel:
    """A fleet and its load; the defaults are the 100-pod fleet of docs/scaling.md."""

    max_pods: int = 100
    min_pods: int = 4
    concurrency: int = 8
    latency_mean: float = 0.3
    latency_sigma: float = 0.35  # lognormal shape: p99 about 2.2 x the median
    base_rate: float = 300.0
    burst_rate: float = 2400.0
    burst_start: float = 60.0
    burst_seconds: float = 120.0
    duration: float = 420.0
    stripe_budget: float = 2500.0  # calls/s the shared limiter allows
    burst_tokens_seconds: float = 0.2
    poll_seconds: float = 5.0
    list_length: int = 8
    pod_start_seconds: float = 20.0
    cooldown_seconds: float = 60.0
    seed: int = 7

    @classmethod
    def scaled(cls, max_pods: int) -> FleetModel:
        """The default model with rates and budget scaled to ``max_pods``."""
        factor = max_pods / cls.max_pods
        base = cls()
        return replace(
            base,
            max_pods=max_pods,
            min_pods=max(1, round(base.min_pods * factor)),
            base_rate=base.base_rate * factor,
            burst_rate=base.burst_rate * factor,
            stripe_budget=base.stripe_budget * factor,
        )

    def arrival_rate(self, t: float) -> float:
        in_burst = self.burst_start <= t < self.burst_start + self.burst_seconds
        return self.burst_rate if in_burst else self.base_rate


@dataclass(frozen=True)
class Run:
    """Each step's series, and the figures read from them."""

    model: FleetModel
    time: np.ndarray
    arrivals: np.ndarray  # jobs/s
    throughput: np.ndarray  # Stripe calls started/s
    depth: np.ndarray
    desired: np.ndarray
    ready: np.ndarray
    busy: np.ndarray

    @property
    def budget_use(self) -> np.ndarray:
        """Stripe calls/s as a share of the budget (1-second moving average)."""
        window = max(1, round(1 / DT))
        smooth = np.convolve(self.throughput, np.ones(window) / window, mode="same")
        return np.asarray(smooth / self.model.stripe_budget)

    @property
    def burst_need(self) -> int:
        model = self.model
        return needed_pods(model.burst_rate, model.latency_mean, model.concurrency)

    @property
    def scale_up_lag(self) -> float:
        """Seconds from the burst's start until enough pods are ready (inf: never)."""
        need = min(self.burst_need, self.model.max_pods)
        after = (self.time >= self.model.burst_start) & (self.ready >= need)
        return float(self.time[after][0] - self.model.burst_start) if after.any() else math.inf

    @property
    def drained_at(self) -> float:
        """Seconds after the burst ends until the queue is back under one poll of arrivals."""
        model = self.model
        end = model.burst_start + model.burst_seconds
        small = model.base_rate * model.poll_seconds
        after = (self.time >= end) & (self.depth <= small)
        return float(self.time[after][0] - end) if after.any() else math.inf

    def figures(self) -> dict[str, float]:
        return {
            "pods needed at the burst": float(self.burst_need),
            "max queue depth": float(self.depth.max()),
            "scale-up lag (s)": self.scale_up_lag,
            "queue drained after the burst (s)": self.drained_at,
            "peak Stripe budget use": float(self.budget_use.max()),
            "peak ready pods": float(self.ready.max()),
        }


def simulate(model: FleetModel) -> Run:
    rng = np.random.default_rng(model.seed)
    steps = round(model.duration / DT)
    # Latency as a histogram over steps: completions of a step's starts spread by it.
    mu = math.log(model.latency_mean) - model.latency_sigma**2 / 2
    horizon = max(2, math.ceil(model.latency_mean * 10 / DT))
    edges = np.exp(mu + model.latency_sigma * rng.standard_normal(20_000))
    # A call of latency L holds its slot round(L / DT) steps (at least one).
    held = np.clip(np.rint(edges / DT).astype(int), 1, horizon - 1)
    pmf = np.bincount(held, minlength=horizon)
    pmf = pmf / pmf.sum()
    finishing = np.zeros(steps + horizon, dtype=np.int64)

    depth = busy = 0
    tokens = model.stripe_budget * model.burst_tokens_seconds
    # Steady state before the burst: the pods the base rate needs.
    ready = desired = max(
        model.min_pods, needed_pods(model.base_rate, model.latency_mean, model.concurrency)
    )
    starting: list[tuple[float, int]] = []  # (ready at, pods)
    last_poll = last_hpa = -math.inf
    last_need_at = 0.0
    series = {k: np.zeros(steps) for k in ("arr", "thr", "depth", "desired", "ready", "busy")}
    for step in range(steps):
        t = step * DT
        arrived = int(rng.poisson(model.arrival_rate(t) * DT))
        depth += arrived
        busy -= int(finishing[step])
        while starting and starting[0][0] <= t:
            ready += starting.pop(0)[1]
        tokens = min(
            model.stripe_budget * model.burst_tokens_seconds,
            tokens + model.stripe_budget * DT,
        )
        started = min(depth, ready * model.concurrency - busy, int(tokens))
        started = max(started, 0)
        if started:
            depth -= started
            busy += started
            tokens -= started
            finishing[step : step + horizon] += rng.multinomial(started, pmf)
        if t - last_poll >= model.poll_seconds:
            last_poll = t
            # KEDA's target: list length per pod, on top of the pods the running jobs need.
            want = math.ceil(depth / model.list_length) + math.ceil(busy / model.concurrency)
            want = min(model.max_pods, max(model.min_pods, want))
            if want >= desired:
                last_need_at = t
            if want > desired and t - last_hpa >= HPA_PERIOD_SECONDS:
                step_up = min(want, desired + max(4, desired)) - desired
                last_hpa = t
                desired += step_up
                starting.append((t + model.pod_start_seconds, step_up))
            elif want < desired and t - last_need_at >= model.cooldown_seconds:
                removable = min(desired - want, ready - max(0, math.ceil(busy / model.concurrency)))
                if removable > 0:
                    desired -= removable
                    ready -= removable
        series["arr"][step] = arrived / DT
        series["thr"][step] = started / DT
        series["depth"][step] = depth
        series["desired"][step] = desired
        series["ready"][step] = ready
        series["busy"][step] = busy
    return Run(
        model,
        np.arange(steps) * DT,
        series["arr"],
        series["thr"],
        series["depth"],
        series["desired"],
        series["ready"],
        series["busy"],
    )


def draw(run: Run, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = run.model
    window = max(1, round(1 / DT))

    def smooth(values: np.ndarray) -> np.ndarray:
        return np.convolve(values, np.ones(window) / window, mode="same")

    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    title = (
        f"{model.max_pods}-pod fleet ({model.concurrency} jobs each), burst "
        f"{model.base_rate:g} → {model.burst_rate:g} jobs/s for {model.burst_seconds:g} s, "
        f"Stripe {model.latency_mean:g} s, budget {model.stripe_budget:g}/s"
    )
    fig.suptitle(title, fontsize=10)
    axes[0].plot(run.time, smooth(run.arrivals), label="jobs arriving/s")
    axes[0].plot(run.time, smooth(run.throughput), label="Stripe calls started/s")
    axes[0].axhline(model.stripe_budget, color="grey", linestyle=":", label="Stripe budget")
    axes[0].set_ylabel("per second")
    axes[1].plot(run.time, run.depth, color="tab:red")
    axes[1].set_ylabel("queue depth")
    axes[2].plot(run.time, run.desired, label="pods asked for (KEDA/HPA)")
    axes[2].plot(run.time, run.ready, label="pods ready")
    axes[2].axhline(
        run.burst_need, color="grey", linestyle=":", label="rate × latency ÷ concurrency"
    )
    lag = run.scale_up_lag
    if math.isfinite(lag):
        axes[2].axvspan(model.burst_start, model.burst_start + lag, alpha=0.15, color="tab:orange")
        axes[2].annotate(f"scale-up lag {lag:.0f} s", (model.burst_start + 1, 1), fontsize=8)
    axes[2].set_ylabel("pods")
    axes[3].plot(run.time, 100 * run.budget_use, color="tab:green")
    axes[3].axhline(100, color="grey", linestyle=":")
    axes[3].set_ylabel("Stripe budget used (%)")
    axes[3].set_xlabel("seconds")
    for axis in axes:
        axis.axvspan(model.burst_start, model.burst_start + model.burst_seconds, alpha=0.06)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--max-pods", type=int, default=FleetModel.max_pods)
    parser.add_argument("--out", type=Path, default=Path("docs/fleet-simulation.png"))
    args = parser.parse_args(argv)
    if args.max_pods < 1:
        parser.error("--max-pods must be at least 1")
    run = simulate(FleetModel.scaled(args.max_pods))
    for name, value in run.figures().items():
        print(f"{name}: {value:.2f}")
    draw(run, args.out)
    print(f"chart: {args.out}")


if __name__ == "__main__":
    main()

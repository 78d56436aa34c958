"""The Grafana dashboard and the alert rules on a real Prometheus scraping a real worker.

A private ``prometheus`` (Debian's, on loopback, its own data directory) scrapes a
``celery worker``'s metrics port every second and loads deploy/prometheus's rules.
The worker (compose's rate budgets) runs three rounds of a mix: jobs that succeed,
one refused by Stripe, one retried after a 500, one after a 429, a bulk batch and
one with a callback. Every dashboard query must return series, and every alert rule
must evaluate, the 429-share rule alone becoming active. The panels are drawn from
those answers (matplotlib, not Grafana) into a PNG; ``CARDS_SCREENSHOT_TO_DOCS=1``
copies it to docs/dashboard-preview.png.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from celery import Celery

from cards.batches import BATCH_TASK_NAME
from cards.settings import get_settings
from harness.processes import RedisServer, client_app, free_port, start_worker, wait_for
from harness.receiver import CallbackReceiver, run_receiver
from producers import enqueue_set_default_card, get_result
from stripe_emulator.process import EmulatorProcess
from tests.integration.conftest import worker_env
from tests.unit.test_deploy_monitoring import DASHBOARD, RULES

PROMETHEUS = shutil.which("prometheus")
DASHBOARD_DB = 13
#: Grafana's $__rate_interval, for a one-second scrape.
RATE_INTERVAL = "10s"
ROUNDS = 3
#: Live jobs and batch rows of one round of :func:`run_mix`, each one outcome.
JOBS_PER_ROUND = 13
DOCS_PREVIEW = Path(__file__).resolve().parents[2] / "docs" / "dashboard-preview.png"

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus is not on PATH (.ci/run installs Debian's)"
)


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", (expr, answer)
        return list(answer["data"]["result"])

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        answer = httpx.get(
            f"{self.url}/api/v1/query_range",
            params={"query": expr, "start": start, "end": end, "step": 1},
            timeout=10,
        ).json()
        assert answer["status"] == "success", (expr, answer)
        return list(answer["data"]["result"])


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[Prometheus, int]]:
    """A private Prometheus scraping the port it returns (nothing listens there yet)."""
    target, port = free_port(), free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "cards-worker", "static_configs": [{"targets": [f"127.0.0.1:{target}"]}]}
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    assert PROMETHEUS is not None
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, 30, "prometheus to be ready")
        yield Prometheus(url), target
    finally:
        process.terminate()
        process.wait(timeout=30)


def dashboard_panels() -> list[dict[str, Any]]:
    dashboard = yaml.safe_load(DASHBOARD.read_text())
    return [panel for panel in dashboard["panels"] if panel.get("targets")]


def legend(target: dict[str, Any], metric: dict[str, str]) -> str:
    """The target's legendFormat with the series' labels filled in, as Grafana does."""
    text = str(target.get("legendFormat") or "")
    for name, value in metric.items():
        text = text.replace("{{" + name + "}}", value)
    text = re.sub(r"\{\{\w+\}\}", "", text).strip()  # a label the series lacks
    return text or ",".join(f"{k}={v}" for k, v in metric.items() if k != "__name__")


def expression(target: dict[str, Any]) -> str:
    return str(target["expr"]).replace("$__rate_interval", RATE_INTERVAL)


def rule_states(server: Prometheus) -> dict[str, tuple[str, str]]:
    """Each alert rule's (health, state) as the server last evaluated it."""
    groups = httpx.get(f"{server.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    return {rule["name"]: (rule["health"], rule["state"]) for g in groups for rule in g["rules"]}


def finished_jobs(server: Prometheus) -> float:
    answer = server.query("sum(cards_job_outcomes_total)")
    return float(answer[0]["value"][1]) if answer else 0.0


def run_mix(app: Celery, emulator: EmulatorProcess, callback_url: str) -> None:
    """One round of the mix, to its last envelope."""
    customers = emulator.admin.seed(12, cards_per_customer=2)
    emulator.admin.script_faults(customers[0]["id"], ["error_500"])
    emulator.admin.script_faults(customers[1]["id"], ["rate_limit"])
    jobs = [enqueue_set_default_card(c["id"], c["cards"][1], app=app) for c in customers[:6]]
    jobs.append(enqueue_set_default_card("cus_NoSuchCustomer", "card_1Nothing", app=app))
    jobs.append(
        enqueue_set_default_card(
            customers[6]["id"], customers[6]["cards"][1], callback_url=callback_url, app=app
        )
    )
    batch_id = str(uuid.uuid4())
    rows = [
        {"userId": c["id"], "default_source": c["cards"][1], "job_id": str(uuid.uuid4())}
        for c in customers[7:]
    ]
    app.send_task(
        BATCH_TASK_NAME,
        kwargs={"jobs": rows},
        task_id=batch_id,
        queue=get_settings().bulk_queue,  # as a migration sends them
    )
    for job_id in jobs:
        get_result(job_id, timeout=60, app=app)
    summary = get_result(batch_id, timeout=60, app=app)["data"]
    assert summary is not None and summary["answered"] == len(rows)


def scraped_round(server: Prometheus, receiver: CallbackReceiver, round_number: int) -> None:
    """Wait until the round's callback arrived and Prometheus scraped its outcomes, so the
    next round's increments land in later scrapes (rate() needs them apart)."""
    wait_for(
        lambda: len(receiver.received("/hook")) == round_number,
        30,
        "the round's callback to be delivered",
    )
    wait_for(
        lambda: finished_jobs(server) >= round_number * JOBS_PER_ROUND,
        30,
        "prometheus to scrape the round's outcomes",
    )


def draw(panels: list[tuple[str, list[tuple[str, list[Any]]]]], path: Path) -> None:
    """Small multiples of the panels' series, in the dashboard's order."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    columns = 4
    rows = math.ceil(len(panels) / columns)
    figure, axes = pyplot.subplots(rows, columns, figsize=(columns * 4.2, rows * 2.6))
    for axis, (title, series) in zip(axes.flat, panels, strict=False):
        axis.set_title(title, fontsize=9)
        axis.tick_params(labelsize=7)
        for label, values in series:
            start = float(values[0][0])
            axis.plot(
                [float(t) - start for t, _ in values],
                [float(v) for _, v in values],
                label=label or "value",
            )
        axis.legend(fontsize=6, loc="upper left")
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    figure.suptitle("cards-worker dashboard queries on a real Prometheus (seconds into the run)")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    pyplot.close(figure)


def test_every_dashboard_query_has_data_and_every_rule_evaluates(
    prometheus: tuple[Prometheus, int],
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    logs_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, metrics_port = prometheus
    url = redis_server.url(DASHBOARD_DB)
    redis.Redis.from_url(url).flushdb()
    with run_receiver(free_port()) as receiver:
        allowed = f"127.0.0.1:{receiver.port}"
        monkeypatch.setenv("CARDS_CALLBACK_ALLOWED_HOSTS", allowed)
        get_settings.cache_clear()
        env = worker_env(
            url,
            emulator.url,
            CARDS_METRICS_PORT=str(metrics_port),
            CARDS_CALLBACK_ALLOWED_HOSTS=allowed,
            CARDS_RATE_LIMITS="cards.bulk=20,cards=80",  # docker-compose.yml's budgets
        )
        worker = start_worker(
            env,
            logs_dir / "dashboard-worker.log",
            name="dashboard",
            extra_args=("-Q", f"{get_settings().queue},{get_settings().bulk_queue}"),
        )
        app = client_app(url)
        started = time.time()
        try:
            for round_number in range(1, ROUNDS + 1):
                run_mix(app, emulator, receiver.url("/hook"))
                scraped_round(server, receiver, round_number)

            panels = dashboard_panels()

            def empty_queries() -> list[str]:
                return [
                    f"{panel['title']}: {target['expr']}"
                    for panel in panels
                    for target in panel["targets"]
                    if not server.query(expression(target))
                ]

            try:
                wait_for(lambda: not empty_queries(), 60, "every dashboard query to have data")
            except TimeoutError:
                raise AssertionError(f"queries without data: {empty_queries()}") from None
            ended = time.time()

            # The rules, evaluated on the same data while the worker still runs: all load
            # and evaluate, and the only one on its way to firing is the 429 share (three
            # of the mix's Stripe calls answered 429, above the rule's 1 %).
            wait_for(
                lambda: (
                    rule_states(server).get("CardsStripeRateLimited", ("", ""))[1] != "inactive"
                ),
                30,
                "the 429-share rule to see the 429s",
            )
            states = rule_states(server)
            assert set(states) == {
                rule["alert"]
                for group in yaml.safe_load(RULES.read_text())["groups"]
                for rule in group["rules"]
            }
            assert all(health == "ok" for health, _ in states.values()), states
            active = {name for name, (_, state) in states.items() if state != "inactive"}
            assert active == {"CardsStripeRateLimited"}, states
        finally:
            worker.stop()
            get_settings.cache_clear()

    drawn = []
    for panel in dashboard_panels():
        series = []
        for target in panel["targets"]:
            for result in server.query_range(expression(target), started, ended):
                series.append((legend(target, result["metric"]), result["values"]))
        drawn.append((str(panel["title"]), series))
    preview = tmp_path / "dashboard-preview.png"
    draw(drawn, preview)
    assert preview.stat().st_size > 0
    if os.environ.get("CARDS_SCREENSHOT_TO_DOCS") == "1":
        shutil.copyfile(preview, DOCS_PREVIEW)

"""deploy/prometheus and deploy/grafana: the alert rules pass promtool's check and their unit
tests (when each alert fires), every dashboard query parses, and every metric they name is one
the worker exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "cards-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "cards-alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "cards-worker.json"
METRIC = re.compile(r"\bcards_[a-z0-9_]+")
#: Series a histogram named N exports besides N itself.
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is needed (Debian package prometheus; .ci/run installs it)"
    return subprocess.run([binary, *args], capture_output=True, text=True, cwd=RULES.parent)


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def exported_metrics() -> set[str]:
    """Every cards_* name the worker's code declares (metrics and the scrape-time collector)."""
    names: set[str] = set()
    for path in (ROOT / "worker").rglob("*.py"):
        names |= set(re.findall(r'"(cards_[a-z0-9_]+)"', path.read_text()))
    return names


def test_the_alert_rules_pass_promtool_check() -> None:
    done = promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr


def test_each_alert_fires_when_its_unit_tests_say() -> None:
    done = promtool("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
    }
    assert alerts == tested  # every alert has a test of when it fires


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """Grafana's $__rate_interval aside, each query is PromQL promtool accepts."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {
                        "record": f"dashboard:query_{n}",
                        "expr": expr.replace("$__rate_interval", "5m"),
                    }
                    for n, expr in enumerate(dashboard_expressions())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboard_covers_each_area_with_unique_panel_ids() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    queries = " ".join(dashboard_expressions())
    for name in (
        "cards_job_outcomes_total",
        "cards_stripe_call_seconds_bucket",
        "cards_rate_limiter_wait_seconds_bucket",
        'reason="rate_limit"',
        "cards_job_retries_total",
        "cards_queue_depth",
        "cards_dead_letters",
        "cards_migrations",
    ):
        assert name in queries, name


def test_every_metric_the_dashboard_and_rules_name_exists_in_the_code() -> None:
    exported = exported_metrics()
    assert {"cards_job_outcomes_total", "cards_queue_depth", "cards_dead_letters"} <= exported
    used = {
        name
        for expr in rule_expressions() + dashboard_expressions()
        for name in METRIC.findall(expr)
    }
    unknown = {
        name
        for name in used
        if name not in exported
        and not any(
            name.endswith(suffix) and name.removesuffix(suffix) in exported
            for suffix in HISTOGRAM_SUFFIXES
        )
    }
    assert unknown == set()
    assert len(used) >= 12


#: Label names whose values come from a fixed, short list (tasks, queues, outcome and retry
#: kinds, Stripe operations, breaker causes, delivery results): never an id or an address.
BOUNDED_LABELS = {"task", "queue", "outcome", "reason", "operation", "cause", "result"}


def test_every_declared_metric_labels_by_bounded_names_only() -> None:
    from prometheus_client import Counter, Gauge, Histogram

    from worker import metrics

    declared = [
        value for value in vars(metrics).values() if isinstance(value, Counter | Gauge | Histogram)
    ]
    assert len(declared) >= 5
    for metric in declared:
        assert set(metric._labelnames) <= BOUNDED_LABELS, (metric._name, metric._labelnames)

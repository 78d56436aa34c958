"""deploy/kubernetes: every manifest validates offline (kubernetes-validate, strict, for the
built-in kinds; the KEDA kinds against tests/unit/keda_schemas.py, since the tool has no CRD
schemas), and the manifests keep the promises docs/scaling.md makes: cheap HTTP probes,
secrets only through secretKeyRef, a grace period that fits the longest job, a
PodDisruptionBudget and a KEDA ScaledObject per worker, bulk below live in priority."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from cards.settings import Settings
from tests.unit.keda_schemas import KEDA_SCHEMAS
from worker.batches import IN_PLACE_WAIT_SECONDS

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
WORKERS = {"cards-worker-live": "cards", "cards-worker-bulk": "cards.bulk"}
#: Celery needs this much beyond the last job to store answers, ack and exit.
SHUTDOWN_MARGIN_SECONDS = 30


def documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in documents() if doc["kind"] == kind}


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return list(deployment["spec"]["template"]["spec"]["containers"])


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_each_manifest_validates_offline(path: Path) -> None:
    version = kubernetes_validate.latest_version()
    for doc in yaml.safe_load_all(path.read_text()):
        if doc["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(doc, KEDA_SCHEMAS[doc["kind"]])
        else:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_keda_schemas_refuse_what_keda_would() -> None:
    scaled = of_kind("ScaledObject")["cards-worker-live"]
    broken = yaml.safe_load(yaml.safe_dump(scaled))
    broken["spec"]["triggers"][0]["metadata"]["listLength"] = 64  # numbers must be strings
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, KEDA_SCHEMAS["ScaledObject"])
    del broken["spec"]["triggers"][0]["metadata"]["listName"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, KEDA_SCHEMAS["ScaledObject"])


def test_every_deployment_has_the_expected_companions() -> None:
    deployments = of_kind("Deployment")
    assert set(deployments) == {*WORKERS, "cards-gateway", "cards-flower"}
    budgets = {
        doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for doc in of_kind("PodDisruptionBudget").values()
    }
    assert budgets == {*WORKERS, "cards-gateway"}


@pytest.mark.parametrize(("name", "queue"), WORKERS.items())
def test_workers_read_their_queue_and_scale_on_its_length(name: str, queue: str) -> None:
    deployment = of_kind("Deployment")[name]
    command = containers(deployment)[0]["command"]
    assert command[:4] == ["celery", "-A", "worker", "worker"]
    assert command[command.index("-Q") + 1] == queue
    scaled = [
        doc
        for doc in of_kind("ScaledObject").values()
        if doc["spec"]["scaleTargetRef"]["name"] == name
    ]
    assert len(scaled) == 1
    (trigger,) = scaled[0]["spec"]["triggers"]
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == queue
    assert trigger["authenticationRef"]["name"] in of_kind("TriggerAuthentication")
    assert "replicas" not in deployment["spec"]  # KEDA owns the count


@pytest.mark.parametrize("name", WORKERS)
def test_worker_probes_are_cheap_http_checks_of_the_metrics_server(name: str) -> None:
    (container,) = containers(of_kind("Deployment")[name])
    port = next(p for p in container["ports"] if p["name"] == "metrics")["containerPort"]
    config = of_kind("ConfigMap")["cards-config"]["data"]
    assert (
        str(port) == config["CARDS_METRICS_PORT"] and config["CARDS_METRICS_ADDRESS"] == "0.0.0.0"
    )
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/livez"
    assert "exec" not in container["livenessProbe"]


def test_secrets_come_only_through_secret_key_refs_to_placeholders() -> None:
    secret = of_kind("Secret")["cards-secrets"]["stringData"]
    assert all("REPLACE_ME" in value for value in secret.values())
    config = of_kind("ConfigMap")["cards-config"]["data"]
    assert not {"STRIPE_API_KEY", "CELERY_BROKER_URL", "REDIS_PASSWORD"} & set(config)
    for deployment in of_kind("Deployment").values():
        for container in containers(deployment):
            for variable in container.get("env", []):
                ref = variable["valueFrom"]["secretKeyRef"] if "valueFrom" in variable else None
                if ref is None:
                    assert not variable["name"].startswith(("STRIPE_API_KEY", "CELERY_"))
                    continue
                assert ref["name"] == "cards-secrets" and ref["key"] in secret
    for auth in of_kind("TriggerAuthentication").values():
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["name"] == "cards-secrets" and ref["key"] in secret


def test_grace_periods_fit_the_longest_job_the_settings_allow() -> None:
    settings = Settings()
    attempt = 2 * settings.stripe_timeout_seconds + settings.rate_limit_max_wait_seconds
    row = IN_PLACE_WAIT_SECONDS + attempt
    batch = math.ceil(settings.bulk_batch_rows / settings.bulk_threads) * row
    deployments = of_kind("Deployment")

    def grace(name: str) -> int:
        return int(deployments[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])

    assert grace("cards-worker-live") >= attempt + SHUTDOWN_MARGIN_SECONDS
    assert grace("cards-worker-bulk") >= batch + SHUTDOWN_MARGIN_SECONDS
    # … and not so much more that a rollout waits on nothing.
    assert grace("cards-worker-live") <= 2 * (attempt + SHUTDOWN_MARGIN_SECONDS)
    assert grace("cards-worker-bulk") <= 2 * (batch + SHUTDOWN_MARGIN_SECONDS)


def test_bulk_workers_run_below_live_work() -> None:
    classes = of_kind("PriorityClass")
    deployments = of_kind("Deployment")

    def priority(name: str) -> int:
        return int(
            classes[deployments[name]["spec"]["template"]["spec"]["priorityClassName"]]["value"]
        )

    assert priority("cards-worker-bulk") < priority("cards-worker-live")
    assert priority("cards-gateway") == priority("cards-worker-live")
    assert classes["cards-bulk"]["preemptionPolicy"] == "Never"

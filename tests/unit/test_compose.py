"""docker-compose.yml (and its Sentinel variant): valid for Docker Compose, and its commands
exist in this project."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SENTINEL_COMPOSE = ROOT / "docker-compose.sentinel.yml"


def services() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def command_words(service: dict[str, Any]) -> str:
    command = service["command"]
    return command if isinstance(command, str) else " ".join(command)


def compose_config(*files: Path, quiet: bool = True) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is needed (Debian package docker-compose; .ci/run installs it)"
    env = {
        **os.environ,
        "REDIS_PASSWORD": "x",
        "FLOWER_BASIC_AUTH": "admin:x",
        "CARDS_GATEWAY_API_KEYS": "x" * 16,
    }
    args = [arg for file in files for arg in ("-f", str(file))]
    return subprocess.run(
        [binary, *args, "config", *(["-q"] if quiet else [])],
        env=env,
        capture_output=True,
        text=True,
    )


def test_compose_validates_with_docker_compose() -> None:
    done = compose_config(COMPOSE)
    assert done.returncode == 0, done.stderr


def test_the_sentinel_variant_validates_and_points_every_app_at_the_sentinels() -> None:
    done = compose_config(COMPOSE, SENTINEL_COMPOSE, quiet=False)
    assert done.returncode == 0, done.stderr
    merged = yaml.safe_load(done.stdout)["services"]
    assert {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"} <= set(merged)
    assert "--sentinel" in command_words(merged["sentinel-1"])
    for name in ("worker", "worker-bulk", "flower", "gateway"):
        environment = merged[name]["environment"]
        for variable in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
            assert environment[variable].count("sentinel://") == 3, (name, variable)


def test_redis_keeps_an_append_only_file_and_needs_a_password() -> None:
    command = command_words(services()["redis"])
    assert "--appendonly yes" in command
    assert "--requirepass" in command
    assert "healthcheck" in services()["redis"]


def test_commands_are_this_projects_entry_points() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    found = services()
    assert command_words(found["worker"]).startswith("celery -A worker worker")
    # `cards flower` runs `celery -A worker flower`, its password from the environment.
    assert command_words(found["flower"]).startswith("cards flower")
    assert "CARDS_FLOWER_BASIC_AUTH" in found["flower"]["environment"]
    assert command_words(found["stripe-emulator"]).split()[0] in scripts
    assert found["stripe-emulator"]["profiles"] == ["dev"]


def test_every_long_running_service_has_a_healthcheck() -> None:
    missing = [name for name, service in services().items() if "healthcheck" not in service]
    assert missing == []


def test_worker_has_no_fixed_name_or_port_so_it_scales() -> None:
    worker = services()["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker


def test_gateway_runs_the_cards_command_on_loopback_with_keys() -> None:
    gateway = services()["gateway"]
    assert command_words(gateway).startswith("cards gateway --host 0.0.0.0 --port 8000")
    assert gateway["ports"] == ["127.0.0.1:8000:8000"]
    assert "CARDS_GATEWAY_API_KEYS" in gateway["environment"]
    assert "/healthz" in " ".join(gateway["healthcheck"]["test"])
    assert "CARDS_GATEWAY_API_KEYS=" in (ROOT / ".env.example").read_text()

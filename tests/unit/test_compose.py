"""docker-compose.yml: valid for Docker Compose, and its commands exist in this project."""

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


def services() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def command_words(service: dict[str, Any]) -> str:
    command = service["command"]
    return command if isinstance(command, str) else " ".join(command)


def test_compose_validates_with_docker_compose() -> None:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is needed (Debian package docker-compose; .ci/run installs it)"
    env = {**os.environ, "REDIS_PASSWORD": "x", "FLOWER_BASIC_AUTH": "admin:x"}
    done = subprocess.run(
        [binary, "-f", str(COMPOSE), "config", "-q"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_redis_keeps_an_append_only_file_and_needs_a_password() -> None:
    command = command_words(services()["redis"])
    assert "--appendonly yes" in command
    assert "--requirepass" in command
    assert "healthcheck" in services()["redis"]


def test_commands_are_this_projects_entry_points() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    found = services()
    assert command_words(found["worker"]).startswith("celery -A worker worker")
    assert "celery -A worker flower" in command_words(found["flower"])
    assert "--basic-auth" in command_words(found["flower"])
    assert command_words(found["stripe-emulator"]).split()[0] in scripts
    assert found["stripe-emulator"]["profiles"] == ["dev"]


def test_every_long_running_service_has_a_healthcheck() -> None:
    missing = [name for name, service in services().items() if "healthcheck" not in service]
    assert missing == []


def test_worker_has_no_fixed_name_or_port_so_it_scales() -> None:
    worker = services()["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker

"""docker-compose.yml (and its Sentinel and RabbitMQ variants): valid for Docker Compose, and
its commands exist in this project."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SENTINEL_COMPOSE = ROOT / "docker-compose.sentinel.yml"
RABBITMQ_COMPOSE = ROOT / "docker-compose.rabbitmq.yml"
#: The rabbitmq profile's password in these tests.
RABBITMQ_PASSWORD = "rabbit0password0x"


def services() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def command_words(service: dict[str, Any]) -> str:
    command = service["command"]
    return command if isinstance(command, str) else " ".join(command)


def compose_config(
    *files: Path, quiet: bool = True, args: tuple[str, ...] = (), **env: str
) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f FILE… ARGS… config`` in the repository, with test secrets
    (``env`` adds or, with "", removes variables)."""
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is needed (Debian package docker-compose; .ci/run installs it)"
    secrets = {
        "REDIS_PASSWORD": "x",
        "CARDS_FLOWER_BASIC_AUTH": "admin:x",
        "CARDS_GATEWAY_API_KEYS": "x" * 16,
        **env,
    }
    environment = {**os.environ, **{k: v for k, v in secrets.items() if v}}
    for name in [k for k, v in secrets.items() if not v]:
        environment.pop(name, None)
    files_args = [arg for file in files for arg in ("-f", str(file))]
    return subprocess.run(
        [binary, *files_args, *args, "config", *(["-q"] if quiet else [])],
        env=environment,
        cwd=ROOT,
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


def readme_rabbitmq_command() -> list[str]:
    """The README's Compose command for RabbitMQ, as printed (Choosing a broker)."""
    readme = (ROOT / "README.md").read_text()
    [command] = re.findall(r"`(docker compose [^`]*docker-compose\.rabbitmq\.yml[^`]*)`", readme)
    return shlex.split(command)


def test_the_readmes_rabbitmq_command_renders_every_app_on_rabbitmq() -> None:
    words = readme_rabbitmq_command()
    assert words[:2] == ["docker", "compose"] and words[-2:] == ["up", "-d"]
    assert " ".join(words) in RABBITMQ_COMPOSE.read_text()  # the file's header says the same
    # As printed, with `config` where it says `up -d` (no Docker daemon here).
    done = compose_config(quiet=False, args=tuple(words[2:-2]), RABBITMQ_PASSWORD=RABBITMQ_PASSWORD)
    assert done.returncode == 0, done.stderr
    merged = yaml.safe_load(done.stdout)["services"]
    for name in APP_SERVICES:
        environment = merged[name]["environment"]
        assert environment["CELERY_BROKER_URL"] == (
            f"amqp://cards:{RABBITMQ_PASSWORD}@rabbitmq:5672//"
        ), name
        assert environment["CELERY_RESULT_BACKEND"] == "redis://:x@redis:6379/0", name
        assert merged[name]["depends_on"]["rabbitmq"]["condition"] == "service_healthy", name
    assert "CARDS_WORKER_CONCURRENCY" in merged["worker"]["environment"]  # merged, not lost
    broker_api = merged["flower"]["environment"]["FLOWER_BROKER_API"]
    assert broker_api == f"http://cards:{RABBITMQ_PASSWORD}@rabbitmq:15672/api/"


def test_the_rabbitmq_variant_needs_its_password() -> None:
    done = compose_config(COMPOSE, RABBITMQ_COMPOSE, RABBITMQ_PASSWORD="")
    assert done.returncode != 0
    assert "set RABBITMQ_PASSWORD in .env" in done.stderr


def test_rabbitmq_runs_quorum_queues_behind_a_password_with_a_healthcheck() -> None:
    rabbitmq = services()["rabbitmq"]
    assert rabbitmq["profiles"] == ["rabbitmq"]
    assert rabbitmq["image"].startswith("rabbitmq:4.") and "management" in rabbitmq["image"]
    environment = rabbitmq["environment"]
    assert environment["RABBITMQ_DEFAULT_USER"] == "cards"
    assert environment["RABBITMQ_DEFAULT_PASS"] == "${RABBITMQ_PASSWORD:-}"
    # An empty password (RABBITMQ_PASSWORD unset) stops the container with that message.
    assert 'test -n "$$RABBITMQ_DEFAULT_PASS"' in command_words(rabbitmq)
    assert "guest" not in str(environment)
    # Only the management UI is published, on loopback; AMQP stays on the Compose network.
    assert rabbitmq["ports"] == ["127.0.0.1:15672:15672"]
    assert rabbitmq["healthcheck"]["test"][:2] == ["CMD", "rabbitmq-diagnostics"]
    config = "./deploy/rabbitmq.conf:/etc/rabbitmq/conf.d/90-cards.conf:ro"
    assert config in rabbitmq["volumes"]
    lines = (ROOT / "deploy" / "rabbitmq.conf").read_text().splitlines()
    assert "default_queue_type = quorum" in lines


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
    missing = [
        name
        for name, service in services().items()
        if "healthcheck" not in service and service.get("restart") != "no"  # one-shot jobs
    ]
    assert missing == []


def rendered(env_file: Path) -> dict[str, Any]:
    """The services as ``docker-compose config`` renders them with ``env_file`` as .env."""
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is needed (Debian package docker-compose; .ci/run installs it)"
    # Only the env file speaks: none of this shell's CARDS_/STRIPE_/COMPOSE_ variables.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("CARDS_", "STRIPE_", "COMPOSE_"))
    }
    done = subprocess.run(
        [binary, "-f", str(COMPOSE), "--env-file", str(env_file), "config"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return dict(yaml.safe_load(done.stdout)["services"])


APP_SERVICES = ("worker", "worker-bulk", "flower", "gateway")


def test_the_env_example_runs_the_dev_profile_against_the_seeded_emulator(
    tmp_path: Path,
) -> None:
    example = (ROOT / ".env.example").read_text()
    assert "COMPOSE_PROFILES=dev" in example.splitlines()
    found = rendered(ROOT / ".env.example")
    emulator = "http://stripe-emulator:12111"
    for name in APP_SERVICES:
        assert found[name]["environment"]["STRIPE_API_BASE"] == emulator, name
        assert "api.stripe.com" not in str(found[name]["environment"]), name
    seed = found["stripe-seed"]
    assert seed["profiles"] == ["dev"]
    assert command_words(seed).startswith(f"stripe-emulator seed --url {emulator}")
    assert seed["depends_on"]["stripe-emulator"]["condition"] == "service_healthy"

    # Without the dev lines, the same file points at Stripe itself.
    production = tmp_path / "production.env"
    production.write_text(
        "".join(
            line + "\n"
            for line in example.splitlines()
            if not line.startswith(("COMPOSE_PROFILES=", "STRIPE_API_BASE="))
        )
    )
    for name, service in rendered(production).items():
        if name in APP_SERVICES:
            assert service["environment"]["STRIPE_API_BASE"] == "https://api.stripe.com"


def test_one_name_per_setting_in_env_example_compose_and_readme() -> None:
    example = (ROOT / ".env.example").read_text()
    compose = COMPOSE.read_text()
    readme = (ROOT / "README.md").read_text()
    names = {
        line.split("=", 1)[0].lstrip("# ")
        for line in example.splitlines()
        if "=" in line and line.lstrip("# ").split("=", 1)[0].isupper()
    }
    assert "CARDS_FLOWER_BASIC_AUTH" in names
    for name in names - {"COMPOSE_PROFILES", "REDIS_PASSWORD"}:
        assert f"`{name}`" in readme, f"{name} is not in the README"
    for name in names - {"COMPOSE_PROFILES"}:
        assert f"${{{name}" in compose, f"{name} is not read by docker-compose.yml"
    assert "FLOWER_BASIC_AUTH:" not in compose.replace("CARDS_FLOWER_BASIC_AUTH", "")


def test_worker_has_no_fixed_name_or_port_so_it_scales() -> None:
    worker = services()["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker


def test_gateway_runs_the_cards_command_scaled_behind_the_proxy_on_loopback() -> None:
    gateway = services()["gateway"]
    assert command_words(gateway).startswith("cards gateway --host 0.0.0.0 --port 8000")
    assert gateway["scale"] >= 2
    assert "ports" not in gateway and "container_name" not in gateway
    assert "CARDS_GATEWAY_API_KEYS" in gateway["environment"]
    assert "/healthz" in " ".join(gateway["healthcheck"]["test"])
    assert "CARDS_GATEWAY_API_KEYS=" in (ROOT / ".env.example").read_text()
    proxy = services()["gateway-proxy"]
    assert proxy["ports"] == ["127.0.0.1:8000:8000"]
    assert "./deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in proxy["volumes"]


def test_the_proxy_config_is_valid_for_haproxy_and_checks_readiness() -> None:
    config = ROOT / "deploy" / "haproxy.cfg"
    binary = shutil.which("haproxy")
    assert binary, "haproxy is needed (Debian package haproxy; .ci/run installs it)"
    done = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    text = config.read_text()
    assert "option httpchk GET /readyz" in text
    assert "server-template gateway" in text and "gateway:8000" in text


def test_live_worker_runs_the_plain_command_and_bulk_workers_prefork() -> None:
    found = services()
    live = command_words(found["worker"]).split()
    assert "-P" not in live and "--pool" not in live
    assert "-c" not in live and "--concurrency" not in live
    assert found["worker"]["environment"]["CARDS_WORKER_CONCURRENCY"]
    assert "-P prefork" in command_words(found["worker-bulk"])


def test_workers_are_checked_by_their_readiness_probe_on_their_metrics_port() -> None:
    for name in ("worker", "worker-bulk"):
        service = services()[name]
        port = service["environment"]["CARDS_METRICS_PORT"]
        assert service["environment"]["CARDS_METRICS_ADDRESS"] == "0.0.0.0"
        check = " ".join(service["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/readyz" in check, name
        assert "celery" not in check  # no Python process importing Celery every 30 s

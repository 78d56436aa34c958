"""The README's "Run the stack by hand" recipe, run as printed, as a person would.

One shell, fed the section's three ``sh`` blocks in turn (each sourced from a file
holding it verbatim, so its exports and background jobs stay in that shell): start
Redis, the emulator, a worker, the gateway and Flower; use them (seed, the CLI, the
gateway, a migration, Flower); stop them. The only difference from a person's
terminal: the ports, which the recipe reads from ``REDIS_PORT`` and friends, are
free ones, and the checkout is a temporary directory whose ``.venv`` is this one.
Between blocks the test waits where a person would watch: until every process
answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from harness.processes import BIN, REPO_ROOT, free_port, wait_for
from stripe_emulator.admin_client import EmulatorAdmin

SECTION = "### Run the stack by hand"
PORTS = ("REDIS_PORT", "EMULATOR_PORT", "GATEWAY_PORT", "FLOWER_PORT")
START_TIMEOUT = 60
BLOCK_TIMEOUT = 120


def recipe_blocks() -> list[str]:
    """The ``sh`` blocks of the README's by-hand section, in order."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(f"\n{SECTION}\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.DOTALL)


def user_env(ports: dict[str, int]) -> dict[str, str]:
    """A person's environment: none of this project's settings, the ports to use."""
    kept = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STRIPE_", "CELERY_", "CARDS_", "VIRTUAL_ENV", "PYTHON"))
    }
    # Without the venv on PATH: the recipe's first line activates it.
    path = os.pathsep.join(p for p in kept.get("PATH", "").split(os.pathsep) if p != str(BIN))
    return {**kept, "PATH": path, **{name: str(port) for name, port in ports.items()}}


def answers(url: str) -> int:
    """The HTTP status of a GET, 0 without an answer."""
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def json_values(text: str) -> list[object]:
    """Every JSON object printed in ``text``, in order (they need not end their lines)."""
    decoder = json.JSONDecoder()
    found: list[object] = []
    at = text.find("{")
    while at != -1:
        try:
            value, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            at = text.find("{", at + 1)
            continue
        found.append(value)
        at = text.find("{", end)
    return found


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Terminal:
    """A bash fed one block at a time, each block's output kept in its own files."""

    shell: subprocess.Popen[bytes]
    home: Path
    ports: dict[str, int]
    count: int = 0

    def run(self, block: str) -> tuple[int, str, str]:
        """Source ``block`` (written verbatim to a file) in the shell; its status and output."""
        self.count += 1
        name = f"block{self.count}"
        (self.home / f"{name}.sh").write_text(block)
        assert self.shell.stdin is not None
        self.shell.stdin.write(
            f". ./{name}.sh > {name}.out 2> {name}.err; echo $? > {name}.rc\n".encode()
        )
        self.shell.stdin.flush()
        rc = self.home / f"{name}.rc"
        wait_for(lambda: rc.exists() and rc.read_text().strip() != "", BLOCK_TIMEOUT, name)
        return int(rc.read_text()), self.stdout(self.count), self.stderr(self.count)

    def stdout(self, number: int) -> str:
        return (self.home / f"block{number}.out").read_text(errors="replace")

    def stderr(self, number: int) -> str:
        return (self.home / f"block{number}.err").read_text(errors="replace")


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    (tmp_path / ".venv").symlink_to(BIN.parent)
    ports = {name: free_port() for name in PORTS}
    shell = subprocess.Popen(
        ["bash"],
        stdin=subprocess.PIPE,
        stdout=(tmp_path / "shell.log").open("wb"),
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        env=user_env(ports),
        start_new_session=True,
    )
    try:
        yield Terminal(shell, tmp_path, ports)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the shell and what it left running
            os.killpg(shell.pid, signal.SIGKILL)
        shell.wait(timeout=10)


def test_the_by_hand_recipe_runs_as_printed(terminal: Terminal) -> None:
    start, use, stop = recipe_blocks()
    ports = terminal.ports
    rc, out, err = terminal.run(start)
    assert rc == 0, out + err

    # What a person watches for before going on: every process answers.
    wait_for(lambda: listening(ports["REDIS_PORT"]), START_TIMEOUT, "redis-server")
    wait_for(lambda: listening(ports["EMULATOR_PORT"]), START_TIMEOUT, "the emulator")
    wait_for(lambda: " ready." in terminal.stderr(1), START_TIMEOUT, "the worker to be ready")
    gateway = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"
    wait_for(lambda: answers(f"{gateway}/healthz") == 200, START_TIMEOUT, "the gateway")
    flower = f"http://127.0.0.1:{ports['FLOWER_PORT']}"
    wait_for(lambda: answers(f"{flower}/healthcheck") != 0, START_TIMEOUT, "Flower")

    rc, out, err = terminal.run(use)
    assert rc == 0, out + err
    assert "Traceback" not in out + err, err[-3000:]
    customers = json.loads((terminal.home / "customers.json").read_text())
    customer, card = customers[0]["id"], customers[0]["cards"][1]
    printed = json_values(out)
    # `cards enqueue --wait`, `cards result` and the gateway: the card is the default.
    updates = [v for v in printed if isinstance(v, dict) and v.get("status") is True]
    assert len(updates) == 3, out
    for envelope in updates:
        assert (envelope["data"]["id"], envelope["data"]["default_source"]) == (customer, card)
    # The migration's summary, its report, then Flower's task list (behind basic auth).
    rows = len(customers)
    assert f": {rows} rows, {rows} done, 0 failed, 0 invalid" in out, out
    assert len((terminal.home / "cards.csv.report.csv").read_text().splitlines()) == rows + 1
    tasks = printed[-1]
    assert isinstance(tasks, dict) and tasks, out[-2000:]
    assert all(task["state"] == "SUCCESS" for task in tasks.values()), tasks
    with EmulatorAdmin(f"http://127.0.0.1:{ports['EMULATOR_PORT']}") as emulator:
        email = emulator.get_customer(customer)["email"]
    assert email and email not in json.dumps(tasks), "Flower shows no customer data"

    rc, out, err = terminal.run(stop)
    assert rc == 0, out + err
    for name, port in ports.items():
        wait_for(lambda port=port: not listening(port), START_TIMEOUT, f"{name} to close")

"""The launcher, the CLI and shutdown."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import stripe

from stripe_emulator.__main__ import main
from stripe_emulator.process import EmulatorProcess, EmulatorStartError, run_emulator

from .conftest import make_client, wait_for


def test_sigterm_exits_cleanly_even_with_a_held_connection() -> None:
    with run_emulator(
        extra_args=["--hang-seconds", "30", "--fault", "timeout_after_commit=1"]
    ) as emu:
        [customer] = emu.admin.seed(1)
        client = make_client(emu.url, timeout=20)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(
                client.v1.customers.update, customer["id"], {"default_source": customer["cards"][1]}
            )
            wait_for(
                lambda: emu.admin.ledger(events=False)["writes_applied_total"] == 1,
                what="the held write to commit",
            )
            started = time.monotonic()
            code = emu.stop()
            assert code == 0
            assert time.monotonic() - started < 4
            with pytest.raises(stripe.APIConnectionError):
                pending.result(timeout=5)
        assert not emu.alive()


def test_ready_line_names_the_bound_port(emulator: EmulatorProcess) -> None:
    assert emulator.url.startswith("http://127.0.0.1:")
    assert emulator.port > 0
    assert emulator.output[0] == f"STRIPE_EMULATOR_READY {emulator.url}"
    assert emulator.admin.health()["pid"] == emulator.pid


def test_bad_arguments_fail_fast() -> None:
    with (
        pytest.raises(EmulatorStartError, match="exited with code 2"),
        run_emulator(extra_args=["--fault", "bogus=0.5"], stderr=subprocess.DEVNULL),
    ):
        pass


def test_seed_subcommand_writes_json(emulator: EmulatorProcess, tmp_path: Path) -> None:
    out = tmp_path / "customers.json"
    code = main(["seed", "--url", emulator.url, "--customers", "3", "--out", str(out)])
    assert code == 0
    customers = json.loads(out.read_text())
    assert len(customers) == 3
    assert all(c["id"].startswith("cus_") for c in customers)


def test_module_help_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stripe_emulator", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "--latency-ms" in result.stdout
    assert "timeout_after_commit" in result.stdout

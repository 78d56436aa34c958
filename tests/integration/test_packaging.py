"""The wheel as a producer installs it: no extras, so neither Stripe, Flower nor FastAPI.

Builds the wheel (``uv build``), installs it into a clean virtual environment
without extras (``uv pip install``; uv's cache keeps repeat runs quick), then
runs that environment's Python: the producer API imports, the worker's, the
gateway's and Flower's libraries are absent, and the README's ``cards
--version`` answers the package's version.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness.processes import BIN

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
#: Only the extras may bring these.
NOT_FOR_PRODUCERS = ("stripe", "flower", "fastapi", "uvicorn", "prometheus_client", "drawbridge")
PROBE = f"""
import importlib.util, json, sys
from producers import enqueue_set_default_card, get_result
from producers.client import enqueue
from producers.migrate.store import MigrationStore
print(json.dumps({{
    "present": [m for m in {NOT_FOR_PRODUCERS!r} if importlib.util.find_spec(m)],
    "loaded": sorted({{n.split(".")[0] for n in sys.modules}} & {{"worker", "opentelemetry"}}),
}}))
"""


def uv(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(BIN / "uv"), *args], cwd=ROOT, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_a_producer_install_has_no_worker_gateway_or_flower_libraries(tmp_path: Path) -> None:
    uv("build", "--wheel", "--quiet", "--out-dir", str(tmp_path / "dist"))
    (wheel,) = (tmp_path / "dist").glob("cards_worker-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "producers/http/migrations.html" in names
    assert any(name.endswith("licenses/LICENSE") for name in names)

    venv = tmp_path / "venv"
    uv("venv", "--quiet", "--python", sys.executable, str(venv))
    uv("pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), str(wheel))

    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", PROBE],
        cwd=tmp_path,  # not the source tree: only what the wheel installed
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == '{"present": [], "loaded": []}'

    # The README's command, as printed, in that environment.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Installing: a producer, or everything", 1)[1]
    command = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert command is not None and command.group(1).strip() == "cards --version"
    version = subprocess.run(
        ["bash", "-c", command.group(1)],
        cwd=tmp_path,
        env={**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"cards {importlib.metadata.version('cards-worker')}"

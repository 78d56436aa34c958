"""The test harness's own promises: a command run with a time limit leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.processes import gone, run_bounded, wait_for

#: A parent that starts a child (in its own process group), says so, then hangs.
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(sys.argv[1], "w").write(str(child.pid))
print("started", flush=True)
time.sleep(600)
"""


def test_past_its_time_limit_a_command_and_its_children_are_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    with pytest.raises(subprocess.TimeoutExpired) as expired:
        run_bounded([sys.executable, "-c", PARENT, str(pid_file)], timeout=3)
    assert expired.value.output == "started\n"  # what it printed is kept
    child = int(pid_file.read_text())
    wait_for(lambda: gone(child), 10, "the command's child to be gone")


def test_within_its_time_limit_it_answers_as_subprocess_run() -> None:
    done = run_bounded([sys.executable, "-c", "print('out'); raise SystemExit(3)"], timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "")

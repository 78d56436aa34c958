"""The plain command's sibling worker processes: how many, their command lines and node
names, the signal each shutdown forwards, the restart backoff (pure decisions).

Real processes (both consume, SIGTERM and SIGKILL of the main pid, one /metrics,
readiness while a sibling is down): tests/integration/test_worker_processes.py.
"""

from __future__ import annotations

import signal

import pytest

from worker.siblings import (
    down_problem,
    is_sibling,
    main_pid_of,
    process_count,
    restart_delay,
    shutdown_signal,
    sibling_argv,
    sibling_nodename,
)

NAME = "--hostname=w-2@h"


@pytest.mark.parametrize(
    ("setting", "cpus", "count"),
    [(0, 2, 2), (0, 16, 16), (0, 1, 1), (0, 0, 1), (1, 16, 1), (3, 2, 3)],
)
def test_process_count(setting: int, cpus: int, count: int) -> None:
    assert process_count(setting, cpus) == count


@pytest.mark.parametrize(
    ("nodename", "index", "expected"),
    [
        ("celery@host", 2, "celery-2@host"),
        ("w1@vm.example", 3, "w1-3@vm.example"),
        ("live-a@h", 2, "live-a-2@h"),
        ("plain", 2, "plain-2"),
    ],
)
def test_sibling_nodename(nodename: str, index: int, expected: str) -> None:
    assert sibling_nodename(nodename, index) == expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-A", "worker", "worker"], ["-A", "worker", "worker", NAME]),
        (
            ["-A", "worker", "worker", "-l", "info", "-Q", "cards", "-c", "8"],
            ["-A", "worker", "worker", "-l", "info", "-Q", "cards", "-c", "8", NAME],
        ),
        (["-A", "worker", "worker", "-n", "w@%h"], ["-A", "worker", "worker", NAME]),
        (["-A", "worker", "worker", "-nw@%h"], ["-A", "worker", "worker", NAME]),
        (["-A", "worker", "worker", "--hostname", "w@h"], ["-A", "worker", "worker", NAME]),
        (["-A", "worker", "worker", "--hostname=w@h"], ["-A", "worker", "worker", NAME]),
        (
            ["-A", "worker", "worker", "-D", "--pidfile", "/run/w.pid", "-l", "info"],
            ["-A", "worker", "worker", "-l", "info", NAME],
        ),
        (
            ["-A", "worker", "worker", "--detach", "--pidfile=/run/w.pid", "--purge"],
            ["-A", "worker", "worker", NAME],
        ),
        (
            ["-A", "worker", "worker", "--discard", "-Q", "q"],
            ["-A", "worker", "worker", "-Q", "q", NAME],
        ),
    ],
)
def test_sibling_argv(argv: list[str], expected: list[str]) -> None:
    assert sibling_argv(argv, "w-2@h") == expected


@pytest.mark.parametrize(("how", "sig"), [("Warm", signal.SIGTERM), ("Cold", signal.SIGQUIT)])
def test_a_shutdown_forwards_the_same_kind(how: str, sig: signal.Signals) -> None:
    assert shutdown_signal(how) == sig


@pytest.mark.parametrize(
    ("failures", "delay"), [(0, 1.0), (1, 1.0), (2, 2.0), (3, 5.0), (5, 30.0), (50, 30.0)]
)
def test_restart_backoff(failures: int, delay: float) -> None:
    assert restart_delay(failures) == delay


@pytest.mark.parametrize(
    ("value", "main_pid"),
    [("123", 123), (None, None), ("", None), ("1", None), ("0", None), ("-5", None), ("x", None)],
)
def test_a_sibling_is_marked_by_its_main_process_pid(
    value: str | None, main_pid: int | None
) -> None:
    environ = {} if value is None else {"CARDS_WORKER_SIBLING_OF": value}
    assert main_pid_of(environ) == main_pid
    assert is_sibling(environ) is (main_pid is not None)


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        (None, "worker process w-2@h is not running (not started yet); restarting"),
        (-9, "worker process w-2@h is not running (killed by SIGKILL); restarting"),
        (1, "worker process w-2@h is not running (exited with code 1); restarting"),
        (0, "worker process w-2@h is not running (exited with code 0); not restarted"),
        (-200, "worker process w-2@h is not running (killed by signal 200); restarting"),
    ],
)
def test_readiness_names_the_process_that_is_down_and_what_happens_next(
    code: int | None, problem: str
) -> None:
    assert down_problem("w-2@h", code) == problem

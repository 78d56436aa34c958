"""What the P5 benchmark reads from outside its processes: peak RSS, Redis memory, files.

Everything here is read the way an operator could: ``/proc/PID/status`` and
``wait4`` for a process's memory, ``INFO memory`` for Redis, ``LLEN`` for a
queue. Nothing reaches into the producer.

Parameters:
    ID_ALPHABET: the letters and digits generated ids are made of.
    CUSTOMER_BODY / CARD_BODY: characters after ``cus_`` / ``card_`` (as Stripe's ids).
    KEYS_SAMPLED: keys looked at (SCAN) to say which kinds of key hold Redis's memory.
    SIZES_SAMPLED: keys of each kind whose ``MEMORY USAGE`` is read.
"""

from __future__ import annotations

import os
import random
import string
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import redis

__all__ = [
    "Finished",
    "KeyGroup",
    "key_groups",
    "queued",
    "redis_used_memory",
    "rss_kib",
    "run_to_end",
    "write_rows",
]

ID_ALPHABET: Final = string.ascii_letters + string.digits
CUSTOMER_BODY: Final = 14
CARD_BODY: Final = 24
KEYS_SAMPLED: Final = 20_000
SIZES_SAMPLED: Final = 50
#: Key names end in an id after this; the part before it is the kind of key.
RESULT_KEY_PREFIX: Final = "celery-task-meta-"


def _rows_counter() -> Callable[[redis.Redis, str], int] | None:
    """harness.queues' counter: rows, not messages, when the bulk queue carries batches."""
    try:
        from harness.queues import queued_rows
    except ImportError:  # a tree without batches: one message is one row
        return None
    return queued_rows


_queued_rows = _rows_counter()


def _random_id(rnd: random.Random, prefix: str, size: int) -> str:
    return prefix + "".join(rnd.choices(ID_ALPHABET, k=size))


def _broken(rnd: random.Random, user: str, source: str) -> tuple[str, str]:
    """One of the mistakes a real export has, each rejected with its own message."""
    kind = rnd.randrange(4)
    if kind == 0:
        return user, _random_id(rnd, "tok_", 10)  # not a card id
    if kind == 1:
        return user[:9] + "-" + user[9:], source  # a character ids never have
    if kind == 2:
        return "", source  # missing
    return user, source[:8] + " "  # stray whitespace


def generated_rows(
    count: int, invalid_share: float, seed: int, fixed: Sequence[tuple[str, str]] = ()
) -> Iterator[tuple[str, str]]:
    """``fixed`` rows first, then generated ones; about ``invalid_share`` of those invalid."""
    yield from fixed[:count]
    rnd = random.Random(seed)
    for _ in range(count - min(count, len(fixed))):
        user = _random_id(rnd, "cus_", CUSTOMER_BODY)
        source = _random_id(rnd, "card_", CARD_BODY)
        if rnd.random() < invalid_share:
            user, source = _broken(rnd, user, source)
        yield user, source


def write_rows(path: Path, rows: Iterator[tuple[str, str]]) -> int:
    """A ``userId,default_source`` CSV (no value needs quoting); the number of rows."""
    written = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("userId,default_source\n")
        for user, source in rows:
            handle.write(f"{user},{source}\n")
            written += 1
    return written


def rss_kib(pid: int) -> tuple[int, int]:
    """(current, peak) resident set size of a live process, in KiB; (0, 0) once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    found = {
        line.split(":")[0]: int(line.split()[1])
        for line in status.splitlines()
        if line.startswith(("VmRSS:", "VmHWM:"))
    }
    return found.get("VmRSS", 0), found.get("VmHWM", 0)


@dataclass(frozen=True)
class Finished:
    """A process run to its end: exit code, wall seconds, peak RSS (from wait4)."""

    exit_code: int
    seconds: float
    peak_rss_kib: int
    stdout: str
    stderr_lines: int
    #: CPU seconds (user + system) the process spent.
    cpu_seconds: float = 0.0


def run_to_end(
    command: Sequence[str], env: Mapping[str, str], cwd: Path, scratch: Path, timeout: float
) -> Finished:
    """Run ``command`` and wait for it with ``wait4``, whose rusage has its peak RSS."""
    out_path, err_path = scratch / "stdout.txt", scratch / "stderr.txt"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.monotonic()
        process = subprocess.Popen(command, cwd=cwd, env=dict(env), stdout=out, stderr=err)
    deadline = started + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            process.kill()
            pid, status, usage = os.wait4(process.pid, 0)
            break
        time.sleep(0.01)
    seconds = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    with err_path.open("rb") as err:
        stderr_lines = sum(1 for _ in err)
    # ru_maxrss is in KiB on Linux.
    return Finished(
        process.returncode,
        seconds,
        int(usage.ru_maxrss),
        out_path.read_text(),
        stderr_lines,
        usage.ru_utime + usage.ru_stime,
    )


def redis_used_memory(client: redis.Redis) -> int:
    info: Any = client.info("memory")
    return int(info["used_memory"])


def queued(client: redis.Redis, queue: str) -> tuple[int, int]:
    """(messages, rows) waiting in ``queue``."""
    messages = int(client.llen(queue))
    rows = messages if _queued_rows is None else int(_queued_rows(client, queue))
    return messages, rows


@dataclass(frozen=True)
class KeyGroup:
    """One kind of key: how many (estimated from a sample), typical size and time to live."""

    prefix: str
    keys: int
    mean_bytes: int
    ttl_seconds: int


def _kind(key: str) -> str:
    if key.startswith(RESULT_KEY_PREFIX):
        return RESULT_KEY_PREFIX
    return key.rsplit(":", 1)[0] + ":" if ":" in key else key


def key_groups(client: redis.Redis) -> list[KeyGroup]:
    """The kinds of key in Redis, the most numerous first, from a sample of ``KEYS_SAMPLED``."""
    total = int(client.dbsize())
    sampled: dict[str, list[str]] = {}
    for count, raw in enumerate(client.scan_iter(count=1000), start=1):
        key = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        sampled.setdefault(_kind(key), []).append(key)
        if count >= KEYS_SAMPLED:
            break
    seen = sum(len(keys) for keys in sampled.values()) or 1
    groups = []
    for prefix, keys in sampled.items():
        sizes = [int(client.memory_usage(k) or 0) for k in keys[:SIZES_SAMPLED]]
        groups.append(
            KeyGroup(
                prefix=prefix,
                keys=round(len(keys) * total / seen),
                mean_bytes=round(sum(sizes) / max(len(sizes), 1)),
                ttl_seconds=int(client.ttl(keys[0])),
            )
        )
    return sorted(groups, key=lambda g: -g.keys)

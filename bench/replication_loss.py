"""What a Sentinel failover loses to asynchronous replication, and what ``WAIT`` saves.

    .venv/bin/python -m bench.replication_loss [--trials 5] [--seconds 2]

Each trial starts a master, a replica and three sentinels (``harness.sentinel``),
has a producer push jobs one at a time (each ``LPUSH`` acknowledged by the
master, as a Celery producer's is), SIGKILLs the master mid-stream and, once a
sentinel has promoted the replica, counts the acknowledged pushes the new master
does not have. Two producers: plain ``LPUSH`` (what every Celery client does), and
``LPUSH`` followed by ``WAIT 1 1000`` on the same connection (acknowledged only
once the replica has it); with the replica in step, and stalled (SIGSTOP) for
``--lag`` seconds before the crash. Prints one line per trial and the worst loss,
as jobs and as milliseconds of the producer's stream.
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import threading
import time
from pathlib import Path

import redis

from harness.sentinel import run_sentinel_cluster

QUEUE = "cards"


def trial(base: Path, *, wait: bool, seconds: float, lag: float) -> tuple[int, int, float]:
    """(acknowledged pushes, lost ones, pushes per second) for one failover; with
    ``lag``, the replica is stopped (SIGSTOP) that long before the master dies, as a
    slow link or a stalled replica would leave it behind."""
    with run_sentinel_cluster(base) as cluster:
        acknowledged = 0
        stop = threading.Event()
        master = redis.Redis(port=cluster.master_port(), socket_timeout=2)

        def produce() -> None:
            nonlocal acknowledged
            while not stop.is_set():
                try:
                    with master.pipeline(transaction=False) as pipe:
                        pipe.lpush(QUEUE, acknowledged)
                        if wait:
                            pipe.execute_command("WAIT", 1, 1000)  # type: ignore[no-untyped-call]
                        replies = pipe.execute()
                except redis.RedisError:
                    return  # the master is gone: what was acknowledged is counted
                if wait and int(replies[-1]) < 1:
                    continue  # not on the replica: a producer would send it again
                acknowledged += 1

        producer = threading.Thread(target=produce)
        began = time.monotonic()
        producer.start()
        time.sleep(seconds)  # the stream's length before the crash (a benchmark knob)
        replica = cluster.processes[
            next(p for p in cluster.redis_ports if p != cluster.master_port())
        ]
        if lag:
            replica.send_signal(signal.SIGSTOP)
            time.sleep(lag)
        old = cluster.kill_master()
        replica.send_signal(signal.SIGCONT)
        elapsed = time.monotonic() - began
        producer.join(10)
        stop.set()
        cluster.wait_for_failover(old)
        kept = cluster.client().llen(QUEUE)
        return acknowledged, max(0, acknowledged - kept), acknowledged / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--lag", type=float, default=0.5, help="replica stalled this long")
    args = parser.parse_args(argv)
    for wait, lag in ((False, 0.0), (False, args.lag), (True, args.lag)):
        label = ("LPUSH + WAIT 1" if wait else "LPUSH") + f", replica {lag:.1f} s behind"
        worst_jobs, worst_ms = 0, 0.0
        for n in range(args.trials):
            with tempfile.TemporaryDirectory(prefix="cards-repl-") as base:
                sent, lost, rate = trial(Path(base), wait=wait, seconds=args.seconds, lag=lag)
            lost_ms = 1000 * lost / rate if rate else 0.0
            worst_jobs, worst_ms = max(worst_jobs, lost), max(worst_ms, lost_ms)
            print(f"{label}: trial {n + 1}: {sent} acknowledged at {rate:.0f}/s, {lost} lost")
        print(f"{label}: worst {worst_jobs} jobs lost ({worst_ms:.1f} ms of the stream)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

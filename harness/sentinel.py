"""A private Redis Sentinel deployment for tests and chaos runs: one master, one
replica and three sentinels (``redis-server --sentinel``), on free loopback ports,
each in its own directory, as an operator would run them.

The sentinels agree on a failure after ``DOWN_AFTER_MS`` (quorum 2) and promote
the replica; :meth:`SentinelCluster.kill_master` SIGKILLs the master, as a crashed
host would, and :meth:`SentinelCluster.wait_for_failover` waits for the promotion.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from harness.processes import free_port, wait_for

__all__ = ["MASTER_NAME", "SentinelCluster", "run_sentinel_cluster"]

MASTER_NAME = "mymaster"
#: Sentinels call the master down after this long without an answer.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


def _client(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)


@dataclass
class SentinelCluster:
    base: Path
    redis_ports: list[int] = field(default_factory=lambda: [free_port(), free_port()])
    sentinel_ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(3)])
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: ``redis-server`` options for both data nodes (e.g. ``min-replicas-to-write``).
    redis_options: tuple[str, ...] = ()

    def url(self, db: int = 0) -> str:
        """The Sentinel URL of every sentinel, as ``CELERY_BROKER_URL`` takes it."""
        first, *rest = self.sentinel_ports
        return ";".join(
            [f"sentinel://127.0.0.1:{first}/{db}"] + [f"sentinel://127.0.0.1:{p}" for p in rest]
        )

    def _start(self, port: int, args: list[str], name: str) -> None:
        directory = self.base / name
        directory.mkdir(parents=True, exist_ok=True)
        log = (directory / "log").open("ab")
        self.processes[port] = subprocess.Popen(
            args, cwd=directory, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def start(self) -> None:
        master, replica = self.redis_ports
        for port, extra in ((master, []), (replica, ["--replicaof", "127.0.0.1", str(master)])):
            self._start(
                port,
                [
                    "redis-server",
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.base / f"redis-{port}"),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    *self.redis_options,
                    *extra,
                ],
                f"redis-{port}",
            )
        wait_for(lambda: self._link_up(replica), 30, "the replica to sync")
        for port in self.sentinel_ports:
            directory = self.base / f"sentinel-{port}"
            directory.mkdir(parents=True, exist_ok=True)
            conf = directory / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            self._start(port, ["redis-server", str(conf), "--sentinel"], f"sentinel-{port}")
        wait_for(self._sentinels_ready, 30, "three sentinels that know each other and the replica")

    def _link_up(self, port: int) -> bool:
        with suppress(redis.RedisError):
            return _client(port).info("replication").get("master_link_status") == "up"
        return False

    def _sentinels_ready(self) -> bool:
        with suppress(redis.RedisError):
            for port in self.sentinel_ports:
                state: Any = _client(port).sentinel_master(MASTER_NAME)
                if int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                    return False
            return True
        return False

    def master_port(self) -> int:
        """The master's port, as a quorum of sentinels sees it now."""
        for port in self.sentinel_ports:
            with suppress(redis.RedisError):
                address: Any = _client(port).sentinel_get_master_addr_by_name(MASTER_NAME)
                return int(address[1])
        raise RuntimeError("no sentinel answers")

    def client(self, db: int = 0) -> redis.Redis:
        """A client of the current master (looked up now, through the sentinels)."""
        return redis.Redis(port=self.master_port(), db=db, socket_timeout=5)

    def kill_master(self) -> int:
        """SIGKILL the current master; its port."""
        port = self.master_port()
        process = self.processes[port]
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        return port

    def wait_for_failover(self, old_master: int, timeout: float = 60) -> float:
        """Wait until the replica is promoted and accepts writes; the seconds it took."""
        began = time.monotonic()

        def promoted() -> bool:
            with suppress(redis.RedisError, RuntimeError):
                port = self.master_port()
                return port != old_master and _client(port).info("replication")["role"] == "master"
            return False

        wait_for(promoted, timeout, "a sentinel failover")
        return time.monotonic() - began

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(10)


@contextmanager
def run_sentinel_cluster(
    base: Path, redis_options: tuple[str, ...] = ()
) -> Iterator[SentinelCluster]:
    cluster = SentinelCluster(base, redis_options=redis_options)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()

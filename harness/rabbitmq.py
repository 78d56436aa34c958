"""RabbitMQ for tests, chaos runs and benchmarks: a private node, or the machine's own.

A private node (:func:`run_rabbit_node`) has its own node name, ports (AMQP,
distribution, epmd; management only when asked), data and log directories and
Erlang cookie, and listens on loopback only; it can be restarted on its port.
Runs that share one node each take a vhost of their own (:func:`own_vhost`,
deleted afterwards with everything in it). The machine's node at 127.0.0.1:5672
is only ever used, never reconfigured: tests on it use queue names of their
own (:func:`unique_queues`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import amqp
import httpx

from harness.chaos import Restartable
from harness.processes import free_port, wait_for

__all__ = [
    "SYSTEM_URL",
    "RabbitNode",
    "answers",
    "own_vhost",
    "run_rabbit_node",
    "unique_queues",
]

#: The machine's RabbitMQ (guest/guest works from loopback only).
SYSTEM_URL = "amqp://guest:guest@127.0.0.1:5672//"
#: The server script itself: /usr/sbin/rabbitmq-server would switch to another user.
_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
_CTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
BOOT_TIMEOUT = 120


#: RabbitMQ's default user, which it lets in from loopback only.
GUEST = ("guest", "guest")


def answers(host: str, port: int) -> bool:
    """Whether an AMQP node at ``host:port`` lets the guest user in."""
    user, password = GUEST
    try:
        connection = amqp.Connection(
            f"{host}:{port}", userid=user, password=password, connect_timeout=2
        )
        connection.connect()
        connection.close()
        return True
    except Exception:  # refused, booting, or closed during the handshake
        return False


def unique_queues(prefix: str = "cards") -> dict[str, str]:
    """Settings for job and bulk queues that no other run uses (for a shared node)."""
    tag = uuid.uuid4().hex[:10]
    return {"CARDS_QUEUE": f"{prefix}-{tag}", "CARDS_BULK_QUEUE": f"{prefix}-{tag}.bulk"}


def _binary(path: Path, name: str) -> str:
    return str(path) if path.exists() else (shutil.which(name) or name)


@dataclass
class RabbitNode(Restartable):
    """A private ``rabbitmq-server``, restartable on its ports."""

    base: Path
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    epmd_port: int = field(default_factory=free_port)
    management_port: int | None = None
    name: str = field(default_factory=lambda: f"cards{secrets.token_hex(4)}@localhost")
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def url(self, vhost: str = "/") -> str:
        path = "/" if vhost == "/" else quote(vhost, safe="")
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{path}"

    def management_url(self) -> str | None:
        if self.management_port is None:
            return None
        return f"http://guest:guest@127.0.0.1:{self.management_port}/api/"

    @property
    def env(self) -> dict[str, str]:
        """Everything the node and ``rabbitmqctl`` need to find each other, and nothing
        of the machine's node (its env file, config, plugins, cookie, epmd)."""
        home = self.base / "home"
        return {
            **os.environ,
            "HOME": str(home),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
        }

    def _write_config(self) -> None:
        home = self.base / "home"
        home.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(16))
            cookie.chmod(0o400)
        (self.base / "rabbitmq-env.conf").write_text("")
        config = [f"listeners.tcp.default = 127.0.0.1:{self.port}", "loopback_users.guest = true"]
        plugins = "[]."
        if self.management_port is not None:
            config += [
                f"management.tcp.port = {self.management_port}",
                "management.tcp.ip = 127.0.0.1",
            ]
            plugins = "[rabbitmq_management]."
        (self.base / "rabbitmq.conf").write_text("\n".join(config) + "\n")
        (self.base / "enabled_plugins").write_text(plugins + "\n")

    def start(self) -> None:
        self._write_config()
        log = (self.base / "server.out").open("ab")
        self.process = subprocess.Popen(
            [_binary(_SERVER, "rabbitmq-server")],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

        def up() -> bool:
            if self.process is not None and self.process.poll() is not None:
                tail = (self.base / "server.out").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"rabbitmq-server exited early:\n{tail}")
            return answers("127.0.0.1", self.port)

        wait_for(up, BOOT_TIMEOUT, f"rabbitmq-server {self.name} on port {self.port}")

    def stop(self, *, crash: bool = False) -> None:
        """A clean stop (SIGTERM) or, with ``crash``, SIGKILL of the whole node."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL if crash else signal.SIGTERM)
        self.process.wait(60)

    def ctl(self, *args: str) -> str:
        """``rabbitmqctl -n NODE …`` against this node only; its standard output."""
        done = subprocess.run(
            [_binary(_CTL, "rabbitmqctl"), "-n", self.name, "-q", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    def messages(self, vhost: str = "/") -> dict[str, int]:
        """Messages (ready and unacknowledged) per queue in one vhost of this node."""
        counts: dict[str, int] = {}
        listed = self.ctl("list_queues", "-p", vhost, "name", "messages", "--no-table-headers")
        for line in listed.splitlines():
            name, _, count = line.rpartition("\t")
            if name and count.strip().isdigit():
                counts[name] = int(count)
        return counts

    def _management(self) -> httpx.Client:
        assert self.management_port is not None, "vhosts are made through the management API"
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.management_port}/api/",
            auth=GUEST,
            trust_env=False,
            timeout=30,
        )

    def add_vhost(self, vhost: str) -> None:
        """A new vhost, in which the guest user may do everything."""
        path = quote(vhost, safe="")
        with self._management() as api:
            api.put(f"vhosts/{path}").raise_for_status()
            everything = {"configure": ".*", "write": ".*", "read": ".*"}
            api.put(f"permissions/{path}/guest", json=everything).raise_for_status()

    def delete_vhost(self, vhost: str) -> None:
        """Delete a vhost and its queues, exchanges and messages."""
        with self._management() as api:
            answer = api.delete(f"vhosts/{quote(vhost, safe='')}")
            if answer.status_code != 404:
                answer.raise_for_status()

    def close(self) -> None:
        """End the node for good: SIGKILL, since its data goes with its directory (a clean
        stop takes seconds)."""
        self.stop(crash=True)

        # The node started an epmd of its own on its private port: end it too. It refuses
        # ("Killing not allowed") until it has seen the killed node's name go.
        def epmd_ended() -> bool:
            try:
                done = subprocess.run(
                    ["epmd", "-port", str(self.epmd_port), "-kill"],
                    env=self.env,
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=False,
                )
            except (OSError, subprocess.SubprocessError):
                return True  # no epmd binary, or it hangs: nothing more to do here
            return "not allowed" not in done.stdout + done.stderr

        wait_for(epmd_ended, 10, f"the epmd on port {self.epmd_port} to end")


@contextmanager
def own_vhost(node: RabbitNode, prefix: str = "cards") -> Iterator[str]:
    """A vhost no other run on ``node`` uses, deleted at the end (the node must be up)."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:10]}"
    node.add_vhost(vhost)
    try:
        yield vhost
    finally:
        node.delete_vhost(vhost)


@contextmanager
def run_rabbit_node(base: Path, *, management: bool = False) -> Iterator[RabbitNode]:
    """A private RabbitMQ node under ``base`` (data, logs, cookie), stopped at the end."""
    base.mkdir(parents=True, exist_ok=True)
    node = RabbitNode(base, management_port=free_port() if management else None)
    try:
        node.start()
        yield node
    finally:
        node.close()

"""A loopback-only network for unit tests: fake DNS, and a guard on every connection.

``socket.create_connection`` (what httpcore connects with) is replaced by a
guard that records every address and lets only loopback through, and
``socket.getaddrinfo`` answers names from a table (numeric addresses are
parsed as usual), so no packet leaves this machine whatever the code under
test does.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest


class GuardedNetwork:
    """The fake network: a DNS table, and every connection attempt."""

    def __init__(self) -> None:
        self.dns: dict[str, list[str]] = {}
        self.connects: list[tuple[str, int]] = []


def install(monkeypatch: pytest.MonkeyPatch) -> GuardedNetwork:
    fake = GuardedNetwork()
    real_connect, real_getaddrinfo = socket.create_connection, socket.getaddrinfo

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        fake.connects.append((address[0], address[1]))
        if not ipaddress.ip_address(address[0]).is_loopback:
            raise AssertionError(f"tried to connect to {address}")
        return real_connect(address, *args, **kwargs)

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:  # a numeric address: no lookup (create_connection asks for these)
            return real_getaddrinfo(host, port, *args, **kwargs)
        if host not in fake.dns:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        results = []
        for address in fake.dns[host]:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, int(port or 0), 0, 0) if ":" in address else (address, int(port))
            results.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
        return results

    monkeypatch.setattr(socket, "create_connection", create_connection)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return fake

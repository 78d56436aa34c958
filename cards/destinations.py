"""Where a callback may be sent: the SSRF rules, shared by producers and the worker.

A ``callback_url`` comes from whoever enqueued the job and is POSTed from inside our
network, so only ``http``/``https`` URLs without credentials whose every address is
public pass, unless the operator allowlists a host, address or CIDR block with a port
(``CARDS_CALLBACK_ALLOWED_HOSTS``); cloud metadata addresses are refused even then.
The producer checks at enqueue (:func:`check_destination`); the worker checks again
against the address it connects to (drawbridge, :data:`BLOCKED_NETWORKS`). Everything
here is pure except :func:`resolve`, the default resolver. The rules in full:
``docs/internals.md``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias
from urllib.parse import urlsplit

__all__ = [
    "BLOCKED_NETWORKS",
    "DEFAULT_PORTS",
    "METADATA_ADDRESSES",
    "METADATA_REASON",
    "Address",
    "Allowlist",
    "Network",
    "RefusedDestination",
    "check_destination",
    "default_port",
    "literal_address",
    "normalize_host",
    "refusal",
    "resolve",
]

Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver: TypeAlias = Callable[[str, int], Sequence[Address]]

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

#: Cloud instance metadata services: never a callback target, allowlist or not.
METADATA_ADDRESSES: Final[frozenset[Address]] = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, DigitalOcean
        ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.ip_address("192.0.0.192"),  # Oracle Cloud
        ipaddress.ip_address("168.63.129.16"),  # Azure WireServer (a public address)
    }
)

METADATA_REASON: Final = "a cloud metadata address"

#: Refused networks, most specific meaning first; the first match names the reason.
#: IPv6 outside 2000::/3 (global unicast) is refused wholesale.
BLOCKED_NETWORKS: Final[tuple[tuple[Network, str], ...]] = (
    (_V4("0.0.0.0/8"), "an unspecified address"),
    (_V4("127.0.0.0/8"), "a loopback address"),
    (_V4("169.254.0.0/16"), "a link-local address"),
    (_V4("10.0.0.0/8"), "a private address"),
    (_V4("172.16.0.0/12"), "a private address"),
    (_V4("192.168.0.0/16"), "a private address"),
    (_V4("100.64.0.0/10"), "a private address"),  # carrier-grade NAT, shared space
    (_V4("224.0.0.0/4"), "a multicast address"),
    (_V4("240.0.0.0/4"), "a reserved address"),  # includes 255.255.255.255
    (_V4("192.0.0.0/24"), "a reserved address"),  # IETF protocol assignments
    (_V4("192.0.2.0/24"), "a reserved address"),  # documentation
    (_V4("198.51.100.0/24"), "a reserved address"),  # documentation
    (_V4("203.0.113.0/24"), "a reserved address"),  # documentation
    (_V4("198.18.0.0/15"), "a reserved address"),  # benchmarking
    (_V4("192.88.99.0/24"), "a reserved address"),  # 6to4 relay anycast
    (_V4("192.175.48.0/24"), "a reserved address"),  # AS112 DNS
    (_V6("::/128"), "an unspecified address"),
    (_V6("::1/128"), "a loopback address"),
    (_V6("fe80::/10"), "a link-local address"),
    (_V6("fc00::/7"), "a private address"),  # unique local
    (_V6("ff00::/8"), "a multicast address"),
    (_V6("64:ff9b::/96"), "a NAT64 address (it embeds an IPv4 address)"),
    (_V6("64:ff9b:1::/48"), "a NAT64 address (it embeds an IPv4 address)"),
    (_V6("2002::/16"), "a 6to4 address (it embeds an IPv4 address)"),
    (_V6("2001::/23"), "a reserved address"),  # IETF protocol assignments, Teredo
    (_V6("2001:db8::/32"), "a reserved address"),  # documentation
    (_V6("3fff::/20"), "a reserved address"),  # documentation
    (_V6("::/3"), "a reserved address"),  # includes IPv4-compatible and 100::/64
    (_V6("4000::/2"), "a reserved address"),
    (_V6("8000::/1"), "a reserved address"),  # fec0::/10 site-local and the rest
)

#: RFC 6761: these names are loopback wherever they are resolved.
_LOOPBACK_NAMES: Final = ("localhost",)
_LOOPBACK_ADDRESSES: Final[tuple[Address, ...]] = (
    ipaddress.ip_address("127.0.0.1"),
    ipaddress.ip_address("::1"),
)
#: What inet_aton accepts: 1 to 4 parts, decimal, octal (0…) or hex (0x…).
_LOOSE_IPV4 = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]*|[0-9]+)){0,3}")
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


class RefusedDestination(ValueError):
    """A callback URL that must not be called. ``str()`` names the rule (and address)."""


def normalize_host(host: str) -> str:
    """Lower case, without IPv6 brackets or a trailing dot."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host[:-1] if host.endswith(".") else host


def literal_address(host: str) -> Address | None:
    """The address a host names literally, in any form a resolver accepts.

    ``2130706433``, ``0177.0.0.1``, ``0x7f.1`` and ``127.1`` are all 127.0.0.1
    to ``inet_aton``; an attacker's URL would use them to slip past a check
    that only knows dotted quads. IPv4-mapped IPv6 is returned as is (see
    :func:`unmapped`).
    """
    host = normalize_host(host)
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if _LOOSE_IPV4.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def unmapped(address: Address) -> Address:
    """An IPv4-mapped IPv6 address (``::ffff:10.0.0.1``) as its IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


#: The ports an allowlist entry without one allows: the http and https defaults.
DEFAULT_PORTS: Final = (80, 443)
_WITH_PORT = re.compile(r"(?P<target>\[[^\]]+\]|[^:\[\]]+):(?P<port>[0-9]{1,5})")


def _split_port(entry: str) -> tuple[str, tuple[int, ...]]:
    """(``target``, its ports) from ``target[:port]``; IPv6 with a port is bracketed."""
    match = _WITH_PORT.fullmatch(entry)
    if match is None:
        return entry, DEFAULT_PORTS
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"CARDS_CALLBACK_ALLOWED_HOSTS entry {entry!r} has an invalid port")
    return match["target"], (port,)


def default_port(scheme: str) -> int:
    return 443 if scheme.lower() == "https" else 80


@dataclass(frozen=True)
class Allowlist:
    """Destinations an operator allows despite the rules: (host name, port) and
    (address or network, port) pairs."""

    hosts: frozenset[tuple[str, int]] = frozenset()
    networks: tuple[tuple[Network, int], ...] = field(default=())

    @classmethod
    def parse(cls, text: str) -> Allowlist:
        """From ``CARDS_CALLBACK_ALLOWED_HOSTS``: comma-separated names, addresses or CIDRs,
        each with an optional ``:port`` (default: 80 and 443).

        Raises ``ValueError`` naming the bad entry.
        """
        hosts: set[tuple[str, int]] = set()
        networks: list[tuple[Network, int]] = []
        for raw in text.split(","):
            entry = raw.strip()
            if not entry:
                continue
            target, ports = _split_port(entry)
            try:
                network = ipaddress.ip_network(normalize_host(target), strict=False)
            except ValueError:
                name = normalize_host(target)
                if not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
                    raise ValueError(
                        f"CARDS_CALLBACK_ALLOWED_HOSTS entry {entry!r} is not a host name, "
                        "an IP address or a CIDR block (with an optional :port)"
                    ) from None
                hosts.update((name, port) for port in ports)
                continue
            if any(network.version == m.version and m in network for m in METADATA_ADDRESSES):
                raise ValueError(
                    f"CARDS_CALLBACK_ALLOWED_HOSTS entry {entry!r} covers a cloud metadata "
                    "address; callbacks are never sent there"
                )
            networks.extend((network, port) for port in ports)
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str, port: int) -> bool:
        return (normalize_host(host), port) in self.hosts

    def networks_at(self, port: int) -> frozenset[Network]:
        """The networks allowlisted at ``port``."""
        return frozenset(network for network, at in self.networks if at == port)

    def allows_address(self, address: Address, port: int) -> bool:
        address = unmapped(address)
        return any(address.version == n.version and address in n for n in self.networks_at(port))


def refusal(
    address: Address, allowlist: Allowlist = Allowlist(), port: int | None = None
) -> str | None:
    """Why a callback may not connect to ``address`` at ``port`` (``"a private
    address"``…), or None. Without a port, the allowlist allows nothing."""
    address = unmapped(address)
    if address in METADATA_ADDRESSES:
        return METADATA_REASON
    if port is not None and allowlist.allows_address(address, port):
        return None
    for network, reason in BLOCKED_NETWORKS:
        if address.version == network.version and address in network:
            return reason
    return None


def resolve(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to (the system resolver); ``OSError`` if none."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def check_destination(
    url: str, allowlist: Allowlist = Allowlist(), resolver: Resolver = resolve
) -> list[Address]:
    """The addresses ``url`` may be called at, or :class:`RefusedDestination` saying why not.

    Every address the host resolves to must pass (one bad record refuses the
    URL: a resolver may rotate through them). ``resolver`` is called only for
    names that are not literal addresses, ``localhost`` or allowlisted names.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise RefusedDestination("callback_url must be an http or https URL")
    if "@" in parts.netloc:
        raise RefusedDestination("callback_url must not contain credentials")
    host = normalize_host(parts.hostname or "")
    if not host:
        raise RefusedDestination("callback_url must name a host")
    try:
        port = parts.port or default_port(parts.scheme)
    except ValueError:
        raise RefusedDestination("callback_url has an invalid port") from None
    named = allowlist.allows_host(host, port)
    literal = literal_address(host)
    if literal is not None:
        addresses: list[Address] = [literal]
    elif host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        addresses = list(_LOOPBACK_ADDRESSES)
    elif named:
        return []  # any address it resolves to; the worker still refuses metadata ones
    else:
        try:
            addresses = list(resolver(host, port))
        except (OSError, UnicodeError):
            raise RefusedDestination("callback_url host cannot be resolved") from None
        if not addresses:
            raise RefusedDestination("callback_url host cannot be resolved")
    for address in addresses:
        reason = refusal(address, allowlist, port)
        if reason is None or (named and reason != METADATA_REASON):
            continue  # an allowlisted name may resolve anywhere but to metadata
        raise RefusedDestination(f"callback_url host resolves to {reason} ({address})")
    return addresses

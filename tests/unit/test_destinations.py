"""The SSRF rules: which callback addresses are refused, and why. Resolvers are fakes."""

from __future__ import annotations

import ipaddress
import random

import pytest
from drawbridge._validator import PRIVATE_IP_RANGES

from cards.destinations import (
    BLOCKED_NETWORKS,
    Address,
    Allowlist,
    RefusedDestination,
    check_destination,
    literal_address,
    refusal,
)

ALLOW_LOOPBACK = Allowlist.parse("127.0.0.1")


def _ip(text: str) -> Address:
    return ipaddress.ip_address(text)


def no_dns(host: str, port: int) -> list[Address]:
    raise AssertionError(f"must not resolve {host!r}")


def fake_dns(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> list[Address]:
        if host not in table:
            raise OSError("no such host")
        return [_ip(a) for a in table[host]]

    return resolve


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.255.0.9", "a loopback address"),
        ("::1", "a loopback address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("10.0.0.1", "a private address"),
        ("172.16.5.4", "a private address"),
        ("172.31.255.255", "a private address"),
        ("192.168.1.1", "a private address"),
        ("100.64.0.1", "a private address"),
        ("fd12:3456::1", "a private address"),
        ("169.254.10.10", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("169.254.170.2", "a cloud metadata address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("168.63.129.16", "a cloud metadata address"),
        ("224.0.0.1", "a multicast address"),
        ("239.255.255.250", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("255.255.255.255", "a reserved address"),
        ("192.0.2.7", "a reserved address"),
        ("198.18.0.1", "a reserved address"),
        ("2001:db8::1", "a reserved address"),
        ("fec0::1", "a reserved address"),
        ("::7f00:1", "a reserved address"),  # IPv4-compatible 127.0.0.1
        # IPv4-mapped IPv6 is judged as the IPv4 address it maps.
        ("::ffff:127.0.0.1", "a loopback address"),
        ("::ffff:10.0.0.1", "a private address"),
        ("::ffff:169.254.169.254", "a cloud metadata address"),
        ("64:ff9b::a00:1", "a NAT64 address (it embeds an IPv4 address)"),
        ("2002:7f00:1::", "a 6to4 address (it embeds an IPv4 address)"),
        ("2001:0:4136:e378::1", "a reserved address"),  # Teredo
        ("93.184.215.14", None),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_address_table(address: str, reason: str | None) -> None:
    assert refusal(_ip(address)) == reason


def test_allowlist_opens_addresses_but_never_metadata() -> None:
    allowlist = Allowlist.parse("127.0.0.1, 10.1.0.0/16, ::1, receiver.internal.")
    assert refusal(_ip("127.0.0.1"), allowlist, 443) is None
    assert refusal(_ip("::ffff:127.0.0.1"), allowlist, 80) is None
    assert refusal(_ip("::1"), allowlist, 443) is None
    assert refusal(_ip("10.1.2.3"), allowlist, 80) is None
    assert refusal(_ip("10.2.0.1"), allowlist, 80) == "a private address"
    assert refusal(_ip("127.0.0.2"), allowlist, 80) == "a loopback address"
    assert allowlist.allows_host("RECEIVER.internal", 443)
    with pytest.raises(ValueError, match="metadata"):
        Allowlist.parse("169.254.0.0/16")
    with pytest.raises(ValueError, match="metadata"):
        Allowlist.parse("0.0.0.0/0")
    with pytest.raises(ValueError, match="not a host name"):
        Allowlist.parse("http://x/")


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),  # decimal
        ("0177.0.0.1", "127.0.0.1"),  # octal
        ("0x7f.0.0.1", "127.0.0.1"),  # hex
        ("0x7f000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),  # short form
        ("017700000001", "127.0.0.1"),  # octal, one part
        ("0xA9.0xFE.0xA9.0xFE", "169.254.169.254"),
        ("[::ffff:7f00:1]", "::ffff:7f00:1"),
        ("[fd00:ec2::254]", "fd00:ec2::254"),
        ("example.com", None),
        ("cafe.be", None),
        ("deadbeef", None),
    ],
)
def test_literal_addresses_in_every_form(host: str, address: str | None) -> None:
    found = literal_address(host)
    assert (str(found) if found else None) == address


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://10.0.0.1/x", "callback_url host resolves to a private address (10.0.0.1)"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "callback_url host resolves to a cloud metadata address (169.254.169.254)",
        ),
        (
            "http://[fd00:ec2::254]/",
            "callback_url host resolves to a cloud metadata address (fd00:ec2::254)",
        ),
        ("http://2130706433/", "callback_url host resolves to a loopback address (127.0.0.1)"),
        ("http://0177.0.0.1:8080/", "callback_url host resolves to a loopback address (127.0.0.1)"),
        (
            "http://[::ffff:10.0.0.1]/",
            "callback_url host resolves to a private address (::ffff:a00:1)",
        ),
        ("http://localhost/", "callback_url host resolves to a loopback address (127.0.0.1)"),
        ("http://LOCALHOST./", "callback_url host resolves to a loopback address (127.0.0.1)"),
        ("http://api.localhost/", "callback_url host resolves to a loopback address (127.0.0.1)"),
        ("http://0.0.0.0:6379/", "callback_url host resolves to an unspecified address (0.0.0.0)"),
        ("ftp://example.com/", "callback_url must be an http or https URL"),
        ("file:///etc/passwd", "callback_url must be an http or https URL"),
        ("http://user:pw@example.com/", "callback_url must not contain credentials"),
        ("http://token@example.com/", "callback_url must not contain credentials"),
        ("http:///path", "callback_url must name a host"),
    ],
)
def test_refused_urls_never_resolve(url: str, message: str) -> None:
    with pytest.raises(RefusedDestination) as refused:
        check_destination(url, Allowlist(), resolver=no_dns)
    assert str(refused.value) == message


def test_names_are_judged_by_every_address_they_resolve_to() -> None:
    dns = fake_dns(
        {
            "public.test": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
            "mixed.test": ["93.184.215.14", "10.0.0.7"],
            "internal.test": ["192.168.0.10"],
        }
    )
    assert check_destination("https://public.test/hook", resolver=dns) == [
        _ip("93.184.215.14"),
        _ip("2606:2800:21f:cb07:6820:80da:af6b:8b2c"),
    ]
    with pytest.raises(RefusedDestination, match=r"private address \(10\.0\.0\.7\)"):
        check_destination("https://mixed.test/hook", resolver=dns)
    with pytest.raises(RefusedDestination, match=r"private address \(192\.168\.0\.10\)"):
        check_destination("https://internal.test/hook", resolver=dns)
    with pytest.raises(RefusedDestination, match="cannot be resolved"):
        check_destination("https://nowhere.test/hook", resolver=dns)
    with pytest.raises(RefusedDestination, match="cannot be resolved"):
        check_destination("https://empty.test/hook", resolver=lambda host, port: [])


def test_allowlisted_names_and_addresses_pass() -> None:
    allowlist = Allowlist.parse("127.0.0.1:8080, receiver.internal")
    assert check_destination("http://127.0.0.1:8080/x", allowlist, no_dns) == [_ip("127.0.0.1")]
    # An allowlisted name is not resolved here; the worker checks it (metadata
    # still refused) when it connects.
    assert check_destination("http://receiver.internal/x", allowlist, no_dns) == []
    # localhost is 127.0.0.1 *and* ::1; only one of them is allowlisted.
    with pytest.raises(RefusedDestination, match=r"loopback address \(::1\)"):
        check_destination("http://localhost/", Allowlist.parse("127.0.0.1"), no_dns)
    named_localhost = Allowlist.parse("localhost:80")
    assert len(check_destination("http://localhost/", named_localhost, no_dns)) == 2


def test_blocked_table_covers_drawbridge_and_every_non_global_address() -> None:
    """The enqueue-time rules refuse at least what the send-time client refuses, and more."""
    ours = [network for network, _ in BLOCKED_NETWORKS]
    for theirs in PRIVATE_IP_RANGES:
        assert any(
            theirs.version == mine.version and theirs.subnet_of(mine)  # type: ignore[arg-type]
            for mine in ours
        ), theirs
    rng = random.Random(4)
    for _ in range(20000):
        v4 = ipaddress.IPv4Address(rng.getrandbits(32))
        v6 = ipaddress.IPv6Address(rng.getrandbits(128))
        for address in (v4, v6):
            if not address.is_global or address.is_multicast:
                assert refusal(address) is not None, address


@pytest.mark.parametrize(
    ("entry", "url", "allowed"),
    [
        # An entry names its port; without one, only 80 and 443.
        ("127.0.0.1:8080", "http://127.0.0.1:8080/x", True),
        ("127.0.0.1:8080", "http://127.0.0.1:6379/x", False),  # Redis on the same host
        ("127.0.0.1:8080", "http://127.0.0.1:5555/x", False),  # Flower
        ("127.0.0.1", "http://127.0.0.1/x", True),
        ("127.0.0.1", "https://127.0.0.1/x", True),
        ("127.0.0.1", "http://127.0.0.1:6379/x", False),
        ("10.1.0.0/16:9000", "http://10.1.2.3:9000/x", True),
        ("10.1.0.0/16:9000", "http://10.1.2.3:8000/x", False),
        ("[::1]:8443", "https://[::1]:8443/x", True),
        ("[::1]:8443", "https://[::1]/x", False),
        ("receiver.internal:8443", "https://receiver.internal:8443/x", True),
        ("receiver.internal:8443", "http://receiver.internal:6379/x", False),
    ],
)
def test_an_allowlist_entry_opens_its_port_only(entry: str, url: str, allowed: bool) -> None:
    allowlist = Allowlist.parse(entry)
    dns = fake_dns({"receiver.internal": ["10.9.9.9"]})
    if allowed:
        check_destination(url, allowlist, dns)
    else:
        with pytest.raises(RefusedDestination):
            check_destination(url, allowlist, dns)


@pytest.mark.parametrize("entry", ["127.0.0.1:0", "127.0.0.1:70000", "host:port:1", "[::1]:99999"])
def test_bad_allowlist_ports_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="CARDS_CALLBACK_ALLOWED_HOSTS entry"):
        Allowlist.parse(entry)

"""The callback edge against the socket layer: refused addresses are never connected to.

Every test runs on :mod:`tests.unit.netguard`'s loopback-only network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from cards.destinations import Allowlist, check_destination
from harness.processes import free_port
from harness.receiver import CallbackReceiver, Reply, run_receiver
from tests.unit import netguard
from tests.unit.netguard import GuardedNetwork
from worker.webhook import CallbackSender

BODY = b'{"job_id":"job-1"}'
HEADERS = {"content-type": "application/json", "webhook-id": "job-1"}


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch) -> GuardedNetwork:
    return netguard.install(monkeypatch)


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    with run_receiver() as running:
        yield running


@pytest.fixture
def sender(receiver: CallbackReceiver) -> Iterator[CallbackSender]:
    allowlist = Allowlist.parse(f"127.0.0.1:{receiver.port}, receiver.internal")
    running = CallbackSender(allowlist, timeout=5)
    yield running
    running.close()


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://10.0.0.1/x", "a private address (10.0.0.1)"),
        ("http://169.254.169.254/latest/meta-data/", "a cloud metadata address (169.254.169.254)"),
        ("http://[fd00:ec2::254]/", "a cloud metadata address (fd00:ec2::254)"),
        ("http://[::ffff:10.0.0.1]/x", "a private address (10.0.0.1)"),
        ("http://[::1]:6379/", "a loopback address (::1)"),
        ("http://127.0.0.2:6379/", "a loopback address (127.0.0.2)"),
        ("http://0.0.0.0:6379/", "an unspecified address (0.0.0.0)"),
        ("http://192.168.1.1/", "a private address (192.168.1.1)"),
        ("https://[fe80::1]/", "a link-local address (fe80::1)"),
        ("http://224.0.0.251/", "a multicast address (224.0.0.251)"),
    ],
)
def test_refused_addresses_are_never_connected_to(
    network: GuardedNetwork, sender: CallbackSender, url: str, refused: str
) -> None:
    outcome = sender.post(url, BODY, HEADERS)
    assert outcome.refused == f"callback_url host resolves to {refused}"
    assert outcome.status is None
    assert network.connects == []


def test_names_are_resolved_once_and_every_address_checked(
    network: GuardedNetwork, sender: CallbackSender
) -> None:
    network.dns = {
        "internal.test": ["10.1.2.3"],
        "mixed.test": ["93.184.215.14", "10.0.0.7"],
        "metadata.test": ["169.254.169.254"],
        # An allowlisted name may resolve to private addresses, never to metadata.
        "receiver.internal": ["169.254.169.254"],
    }
    for host, address in [
        ("internal.test", "a private address (10.1.2.3)"),
        ("mixed.test", "a private address (10.0.0.7)"),
        ("metadata.test", "a cloud metadata address (169.254.169.254)"),
        ("receiver.internal", "a cloud metadata address (169.254.169.254)"),
    ]:
        outcome = sender.post(f"http://{host}/hook", BODY, HEADERS)
        assert outcome.refused == f"callback_url host resolves to {address}", host
    assert network.connects == []
    outcome = sender.post("http://nowhere.test/hook", BODY, HEADERS)
    assert outcome.error == "callback_url host cannot be resolved"
    assert network.connects == []


def test_dns_rebinding_is_caught_at_send_time(
    network: GuardedNetwork, sender: CallbackSender, receiver: CallbackReceiver
) -> None:
    """The producer saw an allowed address; by send time the name points inside: refused."""
    url = f"http://rebind.test:{receiver.port}/hook"
    allowlist = Allowlist.parse(f"127.0.0.1:{receiver.port}")
    network.dns = {"rebind.test": ["127.0.0.1"]}
    assert check_destination(url, allowlist) == [ipaddress.ip_address("127.0.0.1")]
    network.dns = {"rebind.test": ["10.0.0.1"]}
    outcome = sender.post(url, BODY, HEADERS)
    assert outcome.refused == "callback_url host resolves to a private address (10.0.0.1)"
    assert network.connects == []
    assert receiver.received("/hook") == []


def test_connects_to_the_checked_address_with_the_name_as_host(
    network: GuardedNetwork, sender: CallbackSender, receiver: CallbackReceiver
) -> None:
    network.dns = {"callback.test": ["127.0.0.1"]}
    outcome = sender.post(f"http://callback.test:{receiver.port}/hook", BODY, HEADERS)
    assert outcome.status == 200
    assert network.connects == [("127.0.0.1", receiver.port)]
    [request] = receiver.received("/hook")
    assert request.headers["host"] == f"callback.test:{receiver.port}"
    assert request.headers["webhook-id"] == "job-1"
    assert request.body == BODY


def test_redirects_are_not_followed(
    network: GuardedNetwork, sender: CallbackSender, receiver: CallbackReceiver
) -> None:
    receiver.script("/moved", [Reply(302, {"location": receiver.url("/elsewhere")})])
    outcome = sender.post(receiver.url("/moved"), BODY, HEADERS)
    assert outcome.status == 302
    assert len(receiver.received("/moved")) == 1
    assert receiver.received("/elsewhere") == []
    assert network.connects == [("127.0.0.1", receiver.port)]


def test_statuses_and_retry_after_are_reported(
    network: GuardedNetwork, sender: CallbackSender, receiver: CallbackReceiver
) -> None:
    receiver.script("/busy", [Reply(429, {"retry-after": "17"})])
    outcome = sender.post(receiver.url("/busy"), BODY, HEADERS)
    assert (outcome.status, outcome.retry_after) == (429, "17")


def test_no_answer_is_a_connection_error(network: GuardedNetwork) -> None:
    port = free_port()  # nothing listens there
    sender = CallbackSender(Allowlist.parse(f"127.0.0.1:{port}"), timeout=5)
    outcome = sender.post(f"http://127.0.0.1:{port}/hook", BODY, HEADERS)
    sender.close()
    assert outcome.status is None
    assert outcome.error == "connection failed (ConnectError)"
    assert network.connects == [("127.0.0.1", port)]


def test_an_allowlisted_address_opens_its_port_only(
    network: GuardedNetwork, sender: CallbackSender, receiver: CallbackReceiver
) -> None:
    """``127.0.0.1`` once opened every port on it: Redis, Flower's API, the gateway."""
    port = free_port()  # another service on the allowlisted host
    outcome = sender.post(f"http://127.0.0.1:{port}/api/task/apply", BODY, HEADERS)
    assert outcome.refused == "callback_url host resolves to a loopback address (127.0.0.1)"
    assert network.connects == []
    assert sender.post(receiver.url("/hook"), BODY, HEADERS).status == 200

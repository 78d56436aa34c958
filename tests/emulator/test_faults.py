"""Injected faults: what the SDK raises, what is applied and what is saved."""

from __future__ import annotations

import time
from typing import Any

import pytest
import stripe

from stripe_emulator.admin_client import EmulatorAdmin, EmulatorAdminError

from .conftest import ClientFactory, wait_for
from .conftest import error_code as _code


def _update(client: stripe.StripeClient, customer: dict[str, Any], key: str, card: int = 1) -> Any:
    return client.v1.customers.update(
        customer["id"], {"default_source": customer["cards"][card]}, {"idempotency_key": key}
    )


def test_timeout_after_commit_applies_saves_and_hangs(
    client_factory: ClientFactory, admin: EmulatorAdmin, seeded: dict[str, Any]
) -> None:
    admin.script_faults(seeded["id"], ["timeout_after_commit"])
    impatient = client_factory(timeout=0.3)
    started = time.monotonic()
    with pytest.raises(stripe.APIConnectionError):
        _update(impatient, seeded, "fault-timeout")
    assert time.monotonic() - started >= 0.25  # the server held the connection
    assert admin.get_customer(seeded["id"])["default_source"] == seeded["cards"][1]

    retried = _update(client_factory(), seeded, "fault-timeout")
    assert retried.last_response is not None
    assert retried.last_response.headers.get("idempotent-replayed") == "true"
    assert retried.default_source == seeded["cards"][1]
    ledger = admin.ledger()
    assert ledger["writes_applied_by_key"] == {"fault-timeout": 1}
    first = ledger["events"][0]
    assert (first["status"], first["applied"], first["fault"]) == (
        None,
        True,
        "timeout_after_commit",
    )


def _give_up_on_a_late_arrival(
    client_factory: ClientFactory, admin: EmulatorAdmin, seeded: dict[str, Any], key: str
) -> None:
    """Send an update that arrives late; the client gives up on it after 0.2 s."""
    admin.configure(late_arrival_seconds=0.3)
    admin.script_faults(seeded["id"], ["late_arrival"])
    with pytest.raises(stripe.APIConnectionError):
        _update(client_factory(timeout=0.2), seeded, key)


def test_late_arrival_applies_after_the_client_gave_up(
    client_factory: ClientFactory, admin: EmulatorAdmin, seeded: dict[str, Any]
) -> None:
    _give_up_on_a_late_arrival(client_factory, admin, seeded, "fault-late")
    assert admin.get_customer(seeded["id"])["default_source"] == seeded["cards"][0]

    ledger = wait_for(
        lambda: (found := admin.ledger())["writes_applied_by_key"] and found,
        what="the late request to be applied",
    )
    assert admin.get_customer(seeded["id"])["default_source"] == seeded["cards"][1]
    assert ledger["writes_applied_by_key"] == {"fault-late": 1}
    assert ledger["faults_injected"] == {"late_arrival": 1}
    (late,) = ledger["events"]
    assert (late["applied"], late["fault"]) == (True, "late_arrival")


def test_a_retry_before_the_late_arrival_leaves_it_a_replay(
    client_factory: ClientFactory, admin: EmulatorAdmin, seeded: dict[str, Any]
) -> None:
    _give_up_on_a_late_arrival(client_factory, admin, seeded, "fault-late-retried")
    retried = _update(client_factory(), seeded, "fault-late-retried")
    assert retried.last_response is not None
    assert retried.last_response.headers.get("idempotent-replayed") is None
    wait_for(lambda: len(admin.ledger()["events"]) == 2, what="the late request")
    ledger = admin.ledger()
    assert ledger["writes_applied_by_key"] == {"fault-late-retried": 1}
    events = [(e["replayed"], e["fault"]) for e in ledger["events"]]
    assert events == [(False, None), (True, "late_arrival")]


def test_connection_reset_applies_and_saves_nothing(
    client: stripe.StripeClient, admin: EmulatorAdmin, seeded: dict[str, Any]
) -> None:
    admin.script_faults(seeded["id"], ["connection_reset"])
    with pytest.raises(stripe.APIConnectionError):
        _update(client, seeded, "fault-reset")
    assert admin.get_customer(seeded["id"])["default_source"] == seeded["cards"][0]
    retried = _update(client, seeded, "fault-reset")
    assert retried.last_response is not None
    assert retried.last_response.headers.get("idempotent-replayed") is None
    ledger = admin.ledger(events=False)
    assert ledger["writes_applied_by_key"] == {"fault-reset": 1}
    assert ledger["responses_by_status"]["none"] == 1


@pytest.mark.parametrize(
    ("kind", "exc_type", "status"),
    [
        ("rate_limit", stripe.RateLimitError, 429),
        ("conflict_409", stripe.APIError, 409),
        ("error_401", stripe.AuthenticationError, 401),
        ("error_403", stripe.PermissionError, 403),
    ],
)
def test_front_door_faults_are_not_saved(
    client: stripe.StripeClient,
    admin: EmulatorAdmin,
    seeded: dict[str, Any],
    kind: str,
    exc_type: type[stripe.StripeError],
    status: int,
) -> None:
    admin.script_faults(seeded["id"], [kind])
    with pytest.raises(exc_type) as exc:
        _update(client, seeded, f"fault-{kind}")
    assert exc.value.http_status == status
    assert exc.value.headers is not None
    assert "stripe-should-retry" not in exc.value.headers
    if kind == "rate_limit":
        assert _code(exc.value) == "rate_limit"
    if kind == "conflict_409":
        assert _code(exc.value) == "idempotency_key_in_use"
    assert admin.get_customer(seeded["id"])["default_source"] == seeded["cards"][0]
    retried = _update(client, seeded, f"fault-{kind}")
    assert retried.default_source == seeded["cards"][1]
    assert admin.ledger(events=False)["faults_injected"] == {kind: 1}


def test_scripted_faults_run_in_order_and_carry_should_retry(
    client: stripe.StripeClient, admin: EmulatorAdmin, seeded: dict[str, Any]
) -> None:
    admin.script_faults(
        seeded["id"],
        [
            {"kind": "error_500", "should_retry": True},
            {"kind": "rate_limit", "should_retry": False},
        ],
    )
    assert len(admin.pending_faults()) == 1
    with pytest.raises(stripe.APIError) as first:
        _update(client, seeded, "script-1")
    assert first.value.headers is not None
    assert first.value.headers["stripe-should-retry"] == "true"
    with pytest.raises(stripe.RateLimitError) as second:
        _update(client, seeded, "script-2")
    assert second.value.headers is not None
    assert second.value.headers["stripe-should-retry"] == "false"
    assert _update(client, seeded, "script-3").default_source == seeded["cards"][1]
    assert admin.pending_faults() == []


def test_execution_faults_are_not_consumed_by_replays(
    client: stripe.StripeClient, admin: EmulatorAdmin, seeded: dict[str, Any]
) -> None:
    _update(client, seeded, "replayed-first")
    admin.script_faults(seeded["id"], ["error_500"])
    replay = _update(client, seeded, "replayed-first")
    assert replay.last_response is not None
    assert replay.last_response.headers.get("idempotent-replayed") == "true"
    assert len(admin.pending_faults()) == 1
    with pytest.raises(stripe.APIError):
        _update(client, seeded, "replayed-second", card=0)


def test_scripted_faults_only_hit_their_customer_and_reads_pass(
    client: stripe.StripeClient, admin: EmulatorAdmin
) -> None:
    target, bystander = admin.seed(2)
    admin.script_faults(target["id"], ["error_500"])
    assert _update(client, bystander, "bystander").default_source == bystander["cards"][1]
    assert client.v1.customers.retrieve(target["id"]).id == target["id"]
    with pytest.raises(stripe.APIError):
        _update(client, target, "target")


def test_random_faults_follow_configured_rates(
    client: stripe.StripeClient, admin: EmulatorAdmin, seeded: dict[str, Any]
) -> None:
    admin.configure(faults={"error_500": 1.0}, seed=7)
    for i in range(3):
        with pytest.raises(stripe.APIError):
            _update(client, seeded, f"random-{i}")
    # Other routes are not in fault_paths by default.
    assert client.v1.customers.retrieve(seeded["id"]).id == seeded["id"]
    admin.configure(faults={})
    assert _update(client, seeded, "random-off").default_source == seeded["cards"][1]
    assert admin.ledger(events=False)["faults_injected"] == {"error_500": 3}


def test_admin_rejects_bad_knobs(admin: EmulatorAdmin) -> None:
    with pytest.raises(EmulatorAdminError) as unknown_kind:
        admin.configure(faults={"explode": 0.5})
    assert unknown_kind.value.status == 400
    with pytest.raises(EmulatorAdminError):
        admin.configure(faults={"error_500": 0.7, "rate_limit": 0.7})
    with pytest.raises(EmulatorAdminError):
        admin.configure(latency_ms=-1)
    with pytest.raises(EmulatorAdminError):
        admin.script_faults("cus_x", ["not_a_fault"])
    config = admin.configure(latency_ms=5, jitter_ms=2, hang_seconds=1, lock_timeout=False)
    assert (config["latency_ms"], config["jitter_ms"], config["lock_timeout"]) == (5, 2, False)
    assert set(config["faults"]) == {
        "error_500",
        "error_500_after_commit",
        "timeout_after_commit",
        "rate_limit",
        "conflict_409",
        "connection_reset",
        "error_401",
        "error_403",
        "late_arrival",
    }

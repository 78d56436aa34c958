"""Idempotency-Key semantics as the official SDK experiences them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest
import stripe

from stripe_emulator.admin_client import EmulatorAdmin

from .conftest import ClientFactory, wait_for
from .conftest import error_code as _code


def _replayed(obj: stripe.StripeObject) -> bool:
    assert obj.last_response is not None
    return obj.last_response.headers.get("idempotent-replayed") == "true"


def test_replay_returns_same_body_without_reapplying(
    client: stripe.StripeClient, admin: EmulatorAdmin, seeded: dict[str, Any]
) -> None:
    cus_id = seeded["id"]
    second = seeded["cards"][1]
    params: Any = {"default_source": second, "expand": ["sources"]}
    first = client.v1.customers.update(cus_id, params, {"idempotency_key": "idem-replay"})
    assert not _replayed(first)
    # Change the customer behind the key's back: a replay must still return the old body.
    client.v1.customers.update(cus_id, {"default_source": seeded["cards"][0]})
    again = client.v1.customers.update(cus_id, params, {"idempotency_key": "idem-replay"})
    assert _replayed(again)
    assert again.to_dict() == first.to_dict()
    assert again.default_source == second
    assert admin.get_customer(cus_id)["default_source"] == seeded["cards"][0]

    ledger = admin.ledger()
    assert ledger["writes_applied_by_key"]["idem-replay"] == 1
    assert ledger["replays_by_key"]["idem-replay"] == 1
    replay_events = [e for e in ledger["events"] if e["replayed"]]
    assert [(e["idempotency_key"], e["applied"]) for e in replay_events] == [("idem-replay", False)]


def test_same_key_different_params_is_idempotency_error(
    client: stripe.StripeClient, seeded: dict[str, Any]
) -> None:
    client.v1.customers.update(
        seeded["id"], {"default_source": seeded["cards"][1]}, {"idempotency_key": "idem-mismatch"}
    )
    with pytest.raises(stripe.IdempotencyError) as exc:
        client.v1.customers.update(
            seeded["id"],
            {"default_source": seeded["cards"][0]},
            {"idempotency_key": "idem-mismatch"},
        )
    assert exc.value.http_status == 400
    body: Any = exc.value.json_body
    assert body["error"]["type"] == "idempotency_error"
    assert "same parameters" in str(exc.value.user_message)


def test_500_is_saved_and_replayed_under_the_key(
    client: stripe.StripeClient, admin: EmulatorAdmin, seeded: dict[str, Any]
) -> None:
    cus_id = seeded["id"]
    admin.script_faults(cus_id, ["error_500"])
    params: Any = {"default_source": seeded["cards"][1]}
    with pytest.raises(stripe.APIError) as first:
        client.v1.customers.update(cus_id, params, {"idempotency_key": "idem-500"})
    assert first.value.http_status == 500
    with pytest.raises(stripe.APIError) as second:
        client.v1.customers.update(cus_id, params, {"idempotency_key": "idem-500"})
    assert second.value.http_status == 500
    assert second.value.headers is not None
    assert second.value.headers.get("idempotent-replayed") == "true"
    assert admin.get_customer(cus_id)["default_source"] == seeded["cards"][0]

    fresh = client.v1.customers.update(cus_id, params, {"idempotency_key": "idem-500-new"})
    assert fresh.default_source == seeded["cards"][1]
    ledger = admin.ledger(events=False)
    assert "idem-500" not in ledger["writes_applied_by_key"]
    assert ledger["writes_applied_by_key"]["idem-500-new"] == 1
    assert ledger["faults_injected"] == {"error_500": 1}


def test_500_after_commit_applies_once_and_replays_the_500(
    client: stripe.StripeClient, admin: EmulatorAdmin, seeded: dict[str, Any]
) -> None:
    cus_id = seeded["id"]
    admin.script_faults(cus_id, ["error_500_after_commit"])
    params: Any = {"default_source": seeded["cards"][1]}
    for _ in range(2):
        with pytest.raises(stripe.APIError) as exc:
            client.v1.customers.update(cus_id, params, {"idempotency_key": "idem-500-commit"})
        assert exc.value.http_status == 500
    assert admin.get_customer(cus_id)["default_source"] == seeded["cards"][1]
    ledger = admin.ledger(events=False)
    assert ledger["writes_applied_by_key"] == {"idem-500-commit": 1}
    assert ledger["replays_total"] == 1


def test_key_in_flight_is_409_and_saves_nothing(
    client_factory: ClientFactory, admin: EmulatorAdmin, seeded: dict[str, Any]
) -> None:
    admin.configure(latency_ms=400)
    cus_id = seeded["id"]
    params: Any = {"default_source": seeded["cards"][1]}
    options: Any = {"idempotency_key": "idem-in-flight"}
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(client_factory().v1.customers.update, cus_id, params, options)
        wait_for(lambda: admin.health()["writes_in_flight"] >= 1, what="first write in flight")
        with pytest.raises(stripe.APIError) as exc:
            client_factory().v1.customers.update(cus_id, params, options)
        result = first.result(timeout=5)
    assert exc.value.http_status == 409
    assert _code(exc.value) == "idempotency_key_in_use"
    assert result.default_source == seeded["cards"][1]
    replay = client_factory().v1.customers.update(cus_id, params, options)
    assert _replayed(replay)
    ledger = admin.ledger(events=False)
    assert ledger["writes_applied_by_key"] == {"idem-in-flight": 1}
    assert ledger["responses_by_status"]["409"] == 1


def test_validation_refusals_are_not_saved(
    client: stripe.StripeClient, admin: EmulatorAdmin, seeded: dict[str, Any]
) -> None:
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.update(
            seeded["id"],
            cast(Any, {"default_source": seeded["cards"][1], "nonsense": "1"}),
            {"idempotency_key": "idem-invalid"},
        )
    ok = client.v1.customers.update(
        seeded["id"], {"default_source": seeded["cards"][1]}, {"idempotency_key": "idem-invalid"}
    )
    assert not _replayed(ok)
    assert admin.ledger(events=False)["writes_applied_by_key"] == {"idem-invalid": 1}


def test_keys_expire_after_ttl(
    client: stripe.StripeClient, admin: EmulatorAdmin, seeded: dict[str, Any]
) -> None:
    admin.configure(idempotency_ttl_seconds=0.2)
    params: Any = {"default_source": seeded["cards"][1]}
    client.v1.customers.update(seeded["id"], params, {"idempotency_key": "idem-ttl"})

    def executed_again() -> bool:
        obj = client.v1.customers.update(seeded["id"], params, {"idempotency_key": "idem-ttl"})
        return not _replayed(obj)

    wait_for(executed_again, what="key expiry")
    assert admin.ledger(events=False)["writes_applied_by_key"]["idem-ttl"] == 2


def test_keys_are_scoped_per_account(client: stripe.StripeClient, admin: EmulatorAdmin) -> None:
    platform = client.v1.customers.create(
        {"email": "p@example.com"}, {"idempotency_key": "idem-acct"}
    )
    connected = client.v1.customers.create(
        {"email": "p@example.com"},
        {"idempotency_key": "idem-acct", "stripe_account": "acct_1Scoped"},
    )
    assert platform.id != connected.id
    assert not _replayed(connected)
    assert admin.ledger(events=False)["writes_applied_by_key"] == {
        "idem-acct": 1,
        "acct_1Scoped:idem-acct": 1,
    }

"""The emulated Batch Jobs API over HTTP: create, upload within the URL's life, run,
output, and each way a job ends (complete, validation_failed, upload_timeout, timeout,
canceled), applied to the same customers and ledger as /v1."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import stripe

from stripe_emulator.admin_client import EmulatorAdmin
from stripe_emulator.process import EmulatorProcess
from tests.emulator.conftest import API_KEY, wait_for

PREVIEW = "2026-09-30.preview"
ENDED = {"complete", "validation_failed", "upload_timeout", "timeout", "canceled"}


def headers(version: str = PREVIEW, key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Stripe-Version": version}


def create(url: str, **body: Any) -> httpx.Response:
    payload = {"endpoint": {"path": "/v1/customers/:customer", "http_method": "POST"}, **body}
    return httpx.post(f"{url}/v2/core/batch_jobs", json=payload, headers=headers())


def retrieve(url: str, job_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{url}/v2/core/batch_jobs/{job_id}", headers=headers())
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def line(customer: dict[str, Any], n: int, account: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": f"line-{n}",
            "path_params": {"customer": customer["id"]},
            "params": {"default_source": customer["cards"][1]},
            "stripe_version": PREVIEW,
            "context": account,
        }
    ).encode()


def ended(url: str, job_id: str) -> dict[str, Any]:
    return dict(
        wait_for(
            lambda: (j := retrieve(url, job_id))["status"] in ENDED and j,
            timeout=30,
            what="the batch job to end",
        )
    )


def output(job: dict[str, Any]) -> list[dict[str, Any]]:
    body = httpx.get(job["output_file"]["download_url"]["url"]).text
    return [json.loads(text) for text in body.splitlines()]


def test_a_job_runs_its_lines_on_the_customers_and_reports_each(
    emulator: EmulatorProcess, admin: EmulatorAdmin
) -> None:
    customers = admin.seed(3)
    admin.script_faults(customers[1]["id"], ["error_500"])
    job = create(emulator.url, metadata={"migration": "m1"}).json()
    assert job["status"] == "ready_for_upload" and job["metadata"] == {"migration": "m1"}
    body = b"\n".join(line(c, n) for n, c in enumerate(customers))
    assert httpx.put(job["upload_url"]["url"], content=body).status_code == 200

    done = ended(emulator.url, job["id"])
    assert done["status"] == "complete"
    assert (done["success_count"], done["failure_count"]) == (2, 1)
    results = {r["id"]: r for r in output(done)}
    assert [results[f"line-{n}"]["status"] for n in range(3)] == [200, 500, 200]
    assert results["line-0"]["response"]["default_source"] == customers[0]["cards"][1]
    for n in (0, 2):
        stored = admin.get_customer(customers[n]["id"])
        assert stored["default_source"] == customers[n]["cards"][1]
    assert admin.get_customer(customers[1]["id"])["default_source"] == customers[1]["cards"][0]
    writes = admin.ledger()["writes_applied_by_customer"]
    assert [writes.get(c["id"], 0) for c in customers] == [1, 0, 1]


def test_connected_accounts_go_through_the_line_context(
    emulator: EmulatorProcess, admin: EmulatorAdmin
) -> None:
    [customer] = admin.seed(1, account="acct_1BatchCtx")
    job = create(emulator.url).json()
    httpx.put(job["upload_url"]["url"], content=line(customer, 0, "acct_1BatchCtx"))
    assert ended(emulator.url, job["id"])["success_count"] == 1
    stored = admin.get_customer(customer["id"], account="acct_1BatchCtx")
    assert stored["default_source"] == customer["cards"][1]


@pytest.mark.parametrize(
    ("version", "key", "status"),
    [("2025-03-31.basil", API_KEY, 400), (PREVIEW, "sk_live_not_a_test_key", 401)],
    ids=["not-preview", "bad-key"],
)
def test_create_needs_the_key_and_a_preview_version(
    emulator: EmulatorProcess, admin: EmulatorAdmin, version: str, key: str, status: int
) -> None:
    answer = httpx.post(
        f"{emulator.url}/v2/core/batch_jobs",
        json={"endpoint": {"path": "/v1/customers/:customer", "http_method": "POST"}},
        headers=headers(version, key),
    )
    assert answer.status_code == status
    assert "error" in answer.json()


def test_an_unsupported_endpoint_is_refused(
    emulator: EmulatorProcess, admin: EmulatorAdmin
) -> None:
    answer = create(emulator.url, endpoint={"path": "/v1/charges", "http_method": "POST"})
    assert answer.status_code == 400


def test_a_bad_line_fails_validation_and_changes_nothing(
    emulator: EmulatorProcess, admin: EmulatorAdmin
) -> None:
    [customer] = admin.seed(1)
    job = create(emulator.url).json()
    httpx.put(job["upload_url"]["url"], content=line(customer, 0) + b"\n{not json")
    assert ended(emulator.url, job["id"])["status"] == "validation_failed"
    assert admin.get_customer(customer["id"])["default_source"] == customer["cards"][0]


def test_the_upload_url_expires_and_the_job_ends_upload_timeout(
    emulator: EmulatorProcess, admin: EmulatorAdmin
) -> None:
    admin.configure(batch_upload_ttl_seconds=0.3)
    [customer] = admin.seed(1)
    job = create(emulator.url).json()
    assert ended(emulator.url, job["id"])["status"] == "upload_timeout"
    assert httpx.put(job["upload_url"]["url"], content=line(customer, 0)).status_code == 403


def test_a_lost_upload_is_answered_but_the_job_never_starts(
    emulator: EmulatorProcess, admin: EmulatorAdmin
) -> None:
    admin.configure(batch_lose_uploads=1, batch_upload_ttl_seconds=1.0)
    [customer] = admin.seed(1)
    job = create(emulator.url).json()
    assert httpx.put(job["upload_url"]["url"], content=line(customer, 0)).status_code == 200
    assert retrieve(emulator.url, job["id"])["status"] == "ready_for_upload"
    assert ended(emulator.url, job["id"])["status"] == "upload_timeout"
    assert admin.ledger()["writes_applied_total"] == 0


def test_a_job_that_times_out_keeps_its_partial_results(
    emulator: EmulatorProcess, admin: EmulatorAdmin
) -> None:
    admin.configure(batch_timeout_at_fraction=0.5)
    customers = admin.seed(10)
    job = create(emulator.url).json()
    httpx.put(
        job["upload_url"]["url"], content=b"\n".join(line(c, n) for n, c in enumerate(customers))
    )
    done = ended(emulator.url, job["id"])
    assert done["status"] == "timeout"
    assert len(output(done)) == done["success_count"] == 5
    assert admin.ledger()["writes_applied_total"] == 5


def test_cancel_stops_a_running_job(emulator: EmulatorProcess, admin: EmulatorAdmin) -> None:
    admin.configure(batch_lines_per_second=20.0)
    customers = admin.seed(200)
    job = create(emulator.url).json()
    httpx.put(
        job["upload_url"]["url"], content=b"\n".join(line(c, n) for n, c in enumerate(customers))
    )
    wait_for(lambda: retrieve(emulator.url, job["id"])["success_count"] > 0, what="lines to run")
    answer = httpx.post(f"{emulator.url}/v2/core/batch_jobs/{job['id']}/cancel", headers=headers())
    assert answer.json()["status"] in ("cancelling", "canceled")
    done = ended(emulator.url, job["id"])
    assert done["status"] == "canceled"
    assert 0 < len(output(done)) < len(customers)
    assert admin.ledger()["writes_applied_total"] == len(output(done))


def test_the_official_sdk_drives_a_job_with_raw_requests(
    client: stripe.StripeClient, admin: EmulatorAdmin
) -> None:
    """stripe-python's stable release has no batch-job module: raw_request, as the engine will."""
    [customer] = admin.seed(1)
    created = client.raw_request(
        "post",
        "/v2/core/batch_jobs",
        endpoint={"path": "/v1/customers/:customer", "http_method": "POST"},
        stripe_version=PREVIEW,
    )
    job = client.deserialize(created, api_mode="V2")
    assert job["status"] == "ready_for_upload"
    httpx.put(job["upload_url"]["url"], content=line(customer, 0))

    def finished() -> Any:
        answer = client.raw_request(
            "get", f"/v2/core/batch_jobs/{job['id']}", stripe_version=PREVIEW
        )
        current = client.deserialize(answer, api_mode="V2")
        return current if current["status"] == "complete" else None

    assert wait_for(finished, timeout=30, what="the job to complete")["success_count"] == 1
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.raw_request("get", "/v2/core/batch_jobs/batchv2_missing", stripe_version=PREVIEW)
    assert missing.value.http_status == 404

"""The Batch Jobs client against the emulator over HTTP: a job from file to results, and
the file URLs: streamed, never sent the API key, refused on a scheme change."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from harness.processes import wait_for
from producers.migrate.batch_client import BatchJobRefused, BatchJobsClient, FileTransferFailed
from producers.migrate.batch_format import input_line
from stripe_emulator.process import EmulatorProcess
from tests.emulator.conftest import SDK_HTTPX_WARNING
from tests.integration.conftest import API_KEY

PREVIEW = "2026-09-30.preview"

pytestmark = pytest.mark.filterwarnings(SDK_HTTPX_WARNING)


@pytest.fixture
def batch_client(emulator: EmulatorProcess) -> Iterator[BatchJobsClient]:
    emulator.admin.configure(batch_lines_per_second=1000.0, batch_upload_ttl_seconds=300.0)
    client = BatchJobsClient(API_KEY, api_base=emulator.url, stripe_version=PREVIEW)
    yield client
    client.close()
    emulator.admin.configure(batch_lines_per_second=100.0, batch_upload_ttl_seconds=300.0)


def test_a_job_goes_from_file_to_one_result_per_line(
    batch_client: BatchJobsClient, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    customers = emulator.admin.seed(3)
    [connected] = emulator.admin.seed(1, account="acct_1BatchClient")
    emulator.admin.script_faults(customers[1]["id"], ["error_500"])
    rows = [(c, None) for c in customers] + [(connected, "acct_1BatchClient")]
    path = tmp_path / "lines.jsonl"
    with path.open("wb") as out:
        for n, (customer, account) in enumerate(rows, 1):
            out.write(input_line(str(n), customer["id"], customer["cards"][1], account, PREVIEW))

    job = batch_client.create({"migration": "test"})
    assert job["status"] == "ready_for_upload"
    batch_client.upload(job, path)
    wait_for(
        lambda: batch_client.retrieve(job["id"])["status"] == "complete",
        30,
        "the batch job to complete",
    )
    done = batch_client.retrieve(job["id"])
    results = {r.line_id: r for r in batch_client.results(done)}
    assert set(results) == {"1", "2", "3", "4"}
    assert [results[str(n)].ok for n in range(1, 5)] == [True, False, True, True]
    assert results["2"].retryable and results["2"].status == 500
    stored = emulator.admin.get_customer(connected["id"], account="acct_1BatchClient")
    assert stored["default_source"] == connected["cards"][1]


def test_stripe_refusals_say_stripes_message_and_the_repr_hides_the_key(
    batch_client: BatchJobsClient,
) -> None:
    with pytest.raises(BatchJobRefused, match="No such batch job"):
        batch_client.retrieve("batchv2_missing")
    assert API_KEY not in repr(batch_client)


def test_an_expired_upload_url_is_a_transfer_failure(
    batch_client: BatchJobsClient, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    emulator.admin.configure(batch_upload_ttl_seconds=0.2)
    job = batch_client.create({})
    wait_for(
        lambda: batch_client.retrieve(job["id"])["status"] == "upload_timeout",
        10,
        "the upload URL to expire",
    )
    path = tmp_path / "late.jsonl"
    path.write_bytes(input_line("1", "cus_Late", "card_1Late", None, PREVIEW))
    with pytest.raises(FileTransferFailed, match="HTTP 403"):
        batch_client.upload(job, path)


class _FileHost:
    """A loopback server standing in for a presigned-URL host: records what it is sent."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.headers.get("Transfer-Encoding") == "chunked":
                    body = self._chunked()
                host.requests.append((self.command, dict(self.headers.items()), body))

            def _chunked(self) -> bytes:
                data = b""
                while (size := int(self.rfile.readline().strip(), 16)) > 0:
                    data += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
                return data

            def do_PUT(self) -> None:
                self._record()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                self._record()
                body = b'{"id": "1", "status": 200, "response": {}}\n'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_the_file_urls_never_see_the_api_key(batch_client: BatchJobsClient, tmp_path: Path) -> None:
    host = _FileHost()
    try:
        path = tmp_path / "big.jsonl"
        body = b"".join(
            input_line(str(n), f"cus_{n}", f"card_1{n}", None, PREVIEW) for n in range(30_000)
        )
        path.write_bytes(body)  # a few MB: sent in several chunks
        job = {
            "upload_url": {"url": f"{host.url}/upload"},
            "output_file": {"download_url": {"url": f"{host.url}/output"}},
        }
        batch_client.upload(job, path)
        assert [r.line_id for r in batch_client.results(job)] == ["1"]
    finally:
        host.server.shutdown()
    (put_method, put_headers, put_body), (get_method, get_headers, _) = host.requests
    assert (put_method, get_method) == ("PUT", "GET")
    assert put_body == body
    for headers in (put_headers, get_headers):
        assert not any(name.lower() == "authorization" for name in headers)
        assert API_KEY not in repr(headers)


def test_a_file_url_on_another_scheme_is_refused_before_any_connection(
    batch_client: BatchJobsClient, tmp_path: Path
) -> None:
    path = tmp_path / "one.jsonl"
    path.write_bytes(input_line("1", "cus_A", "card_1A", None, PREVIEW))
    # Nothing listens there; the refusal must come first, not a connection error.
    job = {"upload_url": {"url": "https://127.0.0.1:9/upload"}}
    with pytest.raises(FileTransferFailed, match="refused a https file URL"):
        batch_client.upload(job, path)

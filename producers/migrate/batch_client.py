"""A client of Stripe's Batch Jobs API (preview): create, retrieve, cancel, upload, results.

The JSON calls go through the official SDK's ``raw_request`` (its stable release has no
batch-job module) with the preview ``Stripe-Version``. The file moves over plain
HTTPS to the presigned URLs Stripe hands out, streamed both ways so memory stays flat,
and never with the API key: a presigned URL carries its own authority. A URL whose
scheme differs from the API base's is refused before any connection. Shapes that are
guesses come from :mod:`producers.migrate.batch_format`. Needs the ``worker`` extra
(stripe); imported only by the batch engine.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import stripe

from producers.migrate.batch_errors import BatchJobRefused, FileTransferFailed
from producers.migrate.batch_format import (
    ENDPOINT,
    UPLOAD_METHOD,
    LineResult,
    download_url,
    read_result,
    upload_url,
)

__all__ = ["BatchJobRefused", "BatchJobsClient", "FileTransferFailed"]

BATCH_JOBS: Final = "/v2/core/batch_jobs"
#: Bytes per chunk of the streamed upload.
CHUNK_BYTES: Final = 1 << 20


class BatchJobsClient:
    def __init__(
        self,
        api_key: str,
        *,
        api_base: str,
        stripe_version: str,
        timeout: float = 30.0,
    ) -> None:
        self._version = stripe_version
        self._scheme = urlsplit(api_base).scheme
        self._stripe = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base},
            max_network_retries=2,
            http_client=stripe.HTTPXClient(timeout=timeout, allow_sync_methods=True),
        )
        self._files = httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False)

    def __repr__(self) -> str:
        return f"BatchJobsClient(stripe_version={self._version!r})"  # never the key

    def close(self) -> None:
        self._files.close()

    def _call(self, method: str, path: str, **params: Any) -> dict[str, Any]:
        try:
            answer = self._stripe.raw_request(method, path, stripe_version=self._version, **params)
        except stripe.StripeError as exc:
            raise BatchJobRefused(exc.user_message or str(exc)) from None
        job = self._stripe.deserialize(answer, api_mode="V2")
        return dict(job.to_dict())

    def create(self, metadata: Mapping[str, str]) -> dict[str, Any]:
        return self._call("post", BATCH_JOBS, endpoint=dict(ENDPOINT), metadata=dict(metadata))

    def retrieve(self, job_id: str) -> dict[str, Any]:
        return self._call("get", f"{BATCH_JOBS}/{job_id}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("post", f"{BATCH_JOBS}/{job_id}/cancel")

    def _checked(self, url: str) -> str:
        if urlsplit(url).scheme != self._scheme:
            raise FileTransferFailed(f"refused a {urlsplit(url).scheme or 'relative'} file URL")
        return url

    def upload(self, job: Mapping[str, Any], path: Path) -> None:
        """Stream ``path`` to the job's upload URL."""
        url = self._checked(upload_url(job))

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as stream:
                while block := stream.read(CHUNK_BYTES):
                    yield block

        try:
            answer = self._files.request(UPLOAD_METHOD, url, content=chunks())
        except httpx.HTTPError as exc:
            raise FileTransferFailed(f"upload failed: {type(exc).__name__}") from None
        if answer.status_code >= 300:
            raise FileTransferFailed(f"upload refused with HTTP {answer.status_code}")

    def results(self, job: Mapping[str, Any]) -> Iterator[LineResult]:
        """The output file's lines, read as they stream in."""
        url = self._checked(download_url(job))
        try:
            with self._files.stream("GET", url) as answer:
                if answer.status_code >= 300:
                    raise FileTransferFailed(f"output refused with HTTP {answer.status_code}")
                for text in answer.iter_lines():
                    if text.strip():
                        yield read_result(text)
        except httpx.HTTPError as exc:
            raise FileTransferFailed(f"output download failed: {type(exc).__name__}") from None

"""Stripe's Batch Jobs API (public preview), emulated: create, upload, run, output.

``POST /v2/core/batch_jobs``, ``GET /v2/core/batch_jobs/{id}`` and ``POST …/{id}/cancel``
need the key and a ``.preview`` Stripe-Version. A job's presigned-style upload URL
(``PUT``) expires ``batch_upload_ttl_seconds`` after creation; its lines then run
through the same route handler, store and ledger as ``POST /v1/customers/{id}``, at
``batch_lines_per_second``, outside /v1's rate limits, a scripted fault of the
line's customer applying to the line. Knobs fail a job at a fraction (``timeout``)
or lose its upload. Shapes that are guesses (line and result formats, the upload's
method, ``output_file``) are listed in docs/emulator.md.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from . import ids
from . import params as P
from .endpoints import ROUTES, Call
from .errors import StripeError

if TYPE_CHECKING:
    from .app import Emulator

__all__ = ["BatchJob", "BatchJobs", "register_batch_routes"]

BATCH_PATH: Final = "/v2/core/batch_jobs"
UPLOAD_PATH: Final = "/_batch_files/upload/{token}"
OUTPUT_PATH: Final = "/_batch_files/output/{token}"
SUPPORTED: Final = {("POST", "/v1/customers/:customer"): "POST /v1/customers/{id}"}
#: Seconds between two slices of a running job's lines.
TICK_SECONDS: Final = 0.02
#: Lines run at most between two turns of the event loop.
SLICE_LINES: Final = 500
MAX_UPLOAD_BYTES: Final = 5 * 1024**3


class BatchError(Exception):
    """A v2 API error: ``{"error": {"type", "code", "message"}}`` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code

    def response(self) -> web.Response:
        body = {"error": {"type": "invalid_request_error", "code": self.code, "message": str(self)}}
        return web.json_response(body, status=self.status, headers={"Request-Id": ids.request_id()})


@dataclass
class BatchJob:
    id: str
    route_key: str
    endpoint: dict[str, str]
    metadata: dict[str, str]
    skip_validation: bool
    created: float
    upload_token: str
    upload_expires_at: float
    status: str = "ready_for_upload"
    upload: bytes = b""
    output: io.BytesIO = field(default_factory=io.BytesIO)
    output_token: str = ""
    success_count: int = 0
    failure_count: int = 0
    cancel_requested: bool = False
    finished_at: float | None = None

    def to_json(self, origin: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "v2.core.batch_job",
            "created": _iso(self.created),
            "status": self.status,
            "endpoint": self.endpoint,
            "metadata": self.metadata,
            "skip_validation": self.skip_validation,
            "success_count": self.success_count,
            "failure_count": self.failure_count,
            "livemode": False,
        }
        if self.status == "ready_for_upload":
            body["upload_url"] = {
                "url": origin + UPLOAD_PATH.format(token=self.upload_token),
                "expires_at": _iso(self.upload_expires_at),
            }
        if self.output_token:
            body["output_file"] = {
                "content_type": "application/jsonlines",
                "download_url": {"url": origin + OUTPUT_PATH.format(token=self.output_token)},
                "size": self.output.getbuffer().nbytes,
            }
        return body


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(epoch))


def _form_values(value: Any) -> Any:
    """JSON params as the form decoder would have given them: strings, dicts, lists."""
    if isinstance(value, dict):
        return {str(k): _form_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_form_values(v) for v in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


class BatchJobs:
    """Every batch job of one emulator process, and the tasks that run them."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.jobs: dict[str, BatchJob] = {}
        self.by_upload: dict[str, str] = {}
        self.by_output: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: Uploads dropped since ``batch_lose_uploads`` was last set.
        self.lost_uploads = 0

    def clear(self) -> None:
        """Forget every job (the admin reset with ``data``); running ones stop."""
        for job in self.jobs.values():
            job.cancel_requested = True
        self.jobs.clear()
        self.by_upload.clear()
        self.by_output.clear()

    # ------------------------------------------------------------- API side

    def _check(self, request: web.Request) -> None:
        try:
            self.emulator._authenticate(request.headers.get("Authorization"))
        except StripeError as err:
            raise BatchError(err.status, "invalid_api_key", "Invalid API key.") from None
        version = request.headers.get("Stripe-Version") or ""
        if not version.endswith(".preview"):
            raise BatchError(
                400, "invalid_api_version", "Batch jobs need a preview Stripe-Version."
            )

    def _job(self, job_id: str) -> BatchJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise BatchError(404, "resource_missing", f"No such batch job: '{job_id}'")
        if job.status == "ready_for_upload" and time.time() > job.upload_expires_at:
            job.status = "upload_timeout"
        return job

    def create(self, body: dict[str, Any]) -> BatchJob:
        endpoint = body.get("endpoint")
        if not isinstance(endpoint, dict):
            raise BatchError(400, "parameter_missing", "Missing required param: endpoint.")
        key = (str(endpoint.get("http_method", "")).upper(), str(endpoint.get("path", "")))
        route_key = SUPPORTED.get(key)
        if route_key is None:
            raise BatchError(400, "invalid_value", f"Unsupported endpoint: {key[0]} {key[1]}")
        now = time.time()
        job = BatchJob(
            id="batchv2_" + secrets.token_hex(12),
            route_key=route_key,
            endpoint={"http_method": key[0], "path": key[1]},
            metadata={str(k): str(v) for k, v in (body.get("metadata") or {}).items()},
            skip_validation=bool(body.get("skip_validation", False)),
            created=now,
            upload_token=secrets.token_urlsafe(24),
            upload_expires_at=now + self.emulator.config.batch_upload_ttl_seconds,
        )
        self.jobs[job.id] = job
        self.by_upload[job.upload_token] = job.id
        return job

    def receive_upload(self, token: str, data: bytes) -> None:
        job_id = self.by_upload.get(token)
        job = self.jobs.get(job_id or "")
        if job is None or job.status != "ready_for_upload" or time.time() > job.upload_expires_at:
            raise BatchError(403, "request_expired", "Request has expired")
        if self.lost_uploads < self.emulator.config.batch_lose_uploads:
            self.lost_uploads += 1
            return  # answered, never stored: the job will reach upload_timeout
        job.upload = data
        job.status = "validating"
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self, job: BatchJob) -> None:
        if job.status in ("ready_for_upload", "validating"):
            job.status = "canceled"
        elif job.status == "in_progress":
            job.cancel_requested = True
            job.status = "cancelling"
        else:
            raise BatchError(400, "invalid_state", f"A {job.status} batch job cannot be canceled.")

    # ------------------------------------------------------------- run side

    async def _run(self, job: BatchJob) -> None:
        lines = job.upload.splitlines()
        if not job.skip_validation:
            problem = _first_invalid(lines)
            if problem is not None:
                job.status = "validation_failed"
                job.output.write(json.dumps({"error": problem}).encode() + b"\n")
                self._finish(job, "validation_failed")
                return
        if job.status == "canceled":
            return
        job.status = "in_progress"
        config = self.emulator.config
        stop_at = (
            math.ceil(len(lines) * config.batch_timeout_at_fraction)
            if config.batch_timeout_at_fraction > 0
            else None
        )
        done, started = 0, time.monotonic()
        while done < len(lines):
            if job.cancel_requested:
                self._finish(job, "canceled")
                return
            if stop_at is not None and done >= stop_at:
                self._finish(job, "timeout")
                return
            # The rate holds from the first line: a slow job is not one line per tick.
            allowed = int((time.monotonic() - started) * config.batch_lines_per_second) + 1
            # A slice at a time, so that a fast job never stalls the API's other requests.
            end = max(done, min(len(lines), allowed, done + SLICE_LINES))
            if stop_at is not None:
                end = min(end, stop_at)
            for raw in lines[done:end]:
                self._apply(job, raw)
            done = end
            behind = allowed > done
            await asyncio.sleep(0 if behind or done >= len(lines) else TICK_SECONDS)
        self._finish(job, "complete")

    def _finish(self, job: BatchJob, status: str) -> None:
        job.status = status
        job.finished_at = time.time()
        job.output_token = secrets.token_urlsafe(24)
        self.by_output[job.output_token] = job.id
        job.upload = b""

    def _apply(self, job: BatchJob, raw: bytes) -> None:
        emulator = self.emulator
        line_id, status, response = None, 400, {}
        try:
            line = json.loads(raw)
            line_id = line.get("id")
            customer = str(line["path_params"]["customer"])
            context = line.get("context") or None
            params = _form_values(line.get("params") or {})
        except (ValueError, KeyError, TypeError, AttributeError):
            response = {"error": {"type": "invalid_request_error", "message": "Invalid line."}}
            job.failure_count += 1
            job.output.write(
                json.dumps({"id": line_id, "status": 400, "response": response}).encode() + b"\n"
            )
            return
        route = next(r for r in ROUTES if r.key == job.route_key)
        request_id = ids.request_id()
        applied = False
        found = emulator.scripts.next_for(
            customer, route.method, route.template, f"/v1/customers/{customer}"
        )
        fault = None
        if found is not None:
            script, fault = found
            emulator.scripts.consume(script)
            emulator.ledger.fault(fault.kind)
        if fault is not None and fault.kind != "error_500_after_commit":
            status = 429 if fault.kind == "rate_limit" else 500
            response = {"error": {"type": "api_error", "message": f"Emulated {fault.kind}."}}
        else:
            try:
                data = emulator.store.account(context)
                status, response = route.handler(
                    Call(data, {"id": customer}, P.validate(route.schema, params))
                )
                applied = status < 400
            except StripeError as err:
                status, response = err.status, err.body(request_id)
            if fault is not None:
                status, response = (
                    500,
                    {"error": {"type": "api_error", "message": "Emulated error_500_after_commit."}},
                )
        emulator.ledger.request(customer)
        emulator.ledger.response(status)
        emulator.ledger.write(
            {
                "request_id": request_id,
                "t_start": time.time(),
                "t_end": time.time(),
                "method": route.method,
                "path": f"/v1/customers/{customer}",
                "account": context,
                "customer": customer,
                "idempotency_key": None,
                "status": status,
                "applied": applied,
                "replayed": False,
                "fault": fault.kind if fault is not None else None,
            }
        )
        if status < 400:
            job.success_count += 1
        else:
            job.failure_count += 1
        job.output.write(
            json.dumps({"id": line_id, "status": status, "response": response}).encode() + b"\n"
        )


def _first_invalid(lines: list[bytes]) -> str | None:
    """Why the file fails validation (the first bad line), or None. (Pure.)"""
    seen: set[str] = set()
    for number, raw in enumerate(lines, 1):
        try:
            line = json.loads(raw)
            line_id = str(line["id"])
            str(line["path_params"]["customer"])
            if not isinstance(line.get("params", {}), dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return f"line {number}: not a batch line"
        if line_id in seen:
            return f"line {number}: duplicate id"
        seen.add(line_id)
    return None


def register_batch_routes(app: web.Application, emulator: Emulator) -> BatchJobs:
    jobs = BatchJobs(emulator)

    def origin(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    async def create(request: web.Request) -> web.Response:
        try:
            jobs._check(request)
            try:
                body = json.loads(await request.read() or b"{}")
            except ValueError:
                raise BatchError(400, "invalid_json", "The body is not JSON.") from None
            job = jobs.create(body if isinstance(body, dict) else {})
        except BatchError as err:
            return err.response()
        return web.json_response(job.to_json(origin(request)))

    async def retrieve(request: web.Request) -> web.Response:
        try:
            jobs._check(request)
            job = jobs._job(request.match_info["id"])
        except BatchError as err:
            return err.response()
        return web.json_response(job.to_json(origin(request)))

    async def cancel(request: web.Request) -> web.Response:
        try:
            jobs._check(request)
            job = jobs._job(request.match_info["id"])
            jobs.cancel(job)
        except BatchError as err:
            return err.response()
        return web.json_response(job.to_json(origin(request)))

    async def upload(request: web.Request) -> web.Response:
        # Read in chunks: the app's body limit is for /v1 forms, a batch file may be GBs.
        chunks, size = [], 0
        async for chunk in request.content.iter_chunked(1 << 20):
            size += len(chunk)
            if size > MAX_UPLOAD_BYTES:
                return BatchError(413, "file_too_large", "The file exceeds 5 GB.").response()
            chunks.append(chunk)
        try:
            jobs.receive_upload(request.match_info["token"], b"".join(chunks))
        except BatchError as err:
            return err.response()
        return web.Response(status=200)

    async def download(request: web.Request) -> web.Response:
        job = jobs.jobs.get(jobs.by_output.get(request.match_info["token"], ""))
        if job is None:
            return BatchError(403, "request_expired", "Request has expired").response()
        return web.Response(body=job.output.getvalue(), content_type="application/jsonlines")

    app.router.add_post(BATCH_PATH, create)
    app.router.add_get(BATCH_PATH + "/{id}", retrieve)
    app.router.add_post(BATCH_PATH + "/{id}/cancel", cancel)
    app.router.add_put(UPLOAD_PATH, upload)
    app.router.add_get(OUTPUT_PATH, download)
    return jobs

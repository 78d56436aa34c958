"""The seed's HTTP API, served for real: ``cards gateway`` runs this app on uvicorn.

``POST /api/cards/default`` takes the seed's body unchanged and queues a
``cards.set_default_card`` job: ``202`` with the job id and a status URL, or,
with ``?wait=SECONDS``, the seed's response itself once the job is done (the
envelope, with an HTTP status from :mod:`producers.http_errors`), or ``504``
if the wait ran out while the job goes on. ``POST /api/cards/assign`` and
``GET /api/cards/{customerId}`` are the seed's companion calls, run as jobs
the same way; ``GET /api/jobs/{job_id}`` reads any job's state and result.

The gateway is a producer: it validates with the shared contracts, sends jobs
by task name and reads envelopes from the result backend. It never imports
Stripe or the worker, so it scales and deploys apart from them. Waiting polls
the backend from the event loop instead of parking a thread per request.

Every answer is ``{status, message, data}``, errors included; bad input gets a
4xx naming the field, never a traceback or a 500. ``/api`` needs a bearer API
key (:mod:`producers.auth`); ``/healthz`` and ``/openapi.json`` do not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Annotated, Any, Final

import kombu.exceptions
import redis
from celery import Celery, states
from celery.exceptions import BackendError
from celery.result import AsyncResult
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from cards.companion_jobs import AssignCardJob, ListCardsJob, validate_assign_job, validate_list_job
from cards.envelope import Envelope
from cards.jobs import InvalidJob, SetDefaultCardJob, check_job_id, check_stripe_id, validate_job
from cards.settings import Settings, get_settings
from producers import api_models as models
from producers.auth import ApiKeys, InvalidApiKeys
from producers.companion import enqueue_companion_job
from producers.http_errors import (
    BAD_REQUEST,
    GATEWAY_TIMEOUT,
    PAYLOAD_TOO_LARGE,
    UNAUTHORIZED,
    UNAVAILABLE,
    error_body,
    status_for,
)
from producers.jobs import ResultNotReady, Unreachable, check_connections, enqueue_job, get_result
from producers.jobs import producer_app as default_producer_app

__all__ = ["GatewayConfigError", "create_app", "public_state", "serve"]

logger = logging.getLogger(__name__)

#: Polling the result backend while a request waits: first after 50 ms, then
#: doubling up to every 500 ms (a job against Stripe takes 0.2-2 s).
POLL_FIRST_SECONDS: Final = 0.05
POLL_MAX_SECONDS: Final = 0.5
HEALTH_TIMEOUT_SECONDS: Final = 2
#: With Redis down, a request gets its 503 in about a second instead of after
#: Celery's default twenty reconnection attempts to the result backend.
BACKEND_RETRY_POLICY: Final = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
JSON_MEDIA_TYPE: Final = "application/json"
STATUS_PATH: Final = "/api/jobs/{job_id}"

#: Celery's states as the API names them. PENDING covers "queued", "running its
#: first attempt" and "unknown": the result backend cannot tell them apart.
PUBLIC_STATES: Final[Mapping[str, str]] = {
    states.PENDING: "queued",
    states.RECEIVED: "queued",
    states.STARTED: "running",
    states.RETRY: "retrying",
    states.SUCCESS: "done",
    states.FAILURE: "failed",
    states.REVOKED: "revoked",
}

#: What a bad query parameter must be; FastAPI validates these, we word the message.
PARAMETER_RULES: Final[Mapping[str, str]] = {
    "wait": "wait must be a finite number of seconds, at least 0",
}

# BackendError: with result_backend_always_retry, Celery wraps a result store
# that stays unreachable after its retries in BackendGetMetaError/BackendStoreError.
_BROKER_ERRORS = (
    kombu.exceptions.OperationalError,
    redis.RedisError,
    OSError,
    Unreachable,
    BackendError,
)


class GatewayConfigError(ValueError):
    """The gateway must not start with these settings; ``str()`` is one line for the operator."""


class GatewayError(Exception):
    """An answer other than the job's own: the gateway's status, message and data."""

    def __init__(
        self,
        status: int,
        message: str,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.data = data
        self.headers = dict(headers or {})


def public_state(celery_state: str) -> str:
    """The API's name for a Celery state (``queued``, ``retrying``, ``done``, ...). Pure."""
    return PUBLIC_STATES.get(celery_state, celery_state.lower())


def is_json_media_type(content_type: str | None) -> bool:
    """``application/json`` or ``application/<anything>+json``, with any parameters. Pure."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == JSON_MEDIA_TYPE or (
        media.startswith("application/") and media.endswith("+json")
    )


def _too_large(limit: int) -> GatewayError:
    return GatewayError(PAYLOAD_TOO_LARGE, f"request body is larger than {limit} bytes")


async def read_json_body(request: Request, limit: int) -> object:
    """The request's JSON body, read at most ``limit`` bytes; :class:`GatewayError` if not."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    if not is_json_media_type(request.headers.get("content-type")):
        raise GatewayError(BAD_REQUEST, f"invalid request: Content-Type must be {JSON_MEDIA_TYPE}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise GatewayError(BAD_REQUEST, "invalid request: the body is not valid JSON") from None


def _invalid(exc: InvalidJob) -> GatewayError:
    return GatewayError(BAD_REQUEST, str(exc))


def _checked(check: Callable[[], object]) -> None:
    """Run a field check from :mod:`cards.jobs`; its ``ValueError`` becomes a 400."""
    try:
        check()
    except ValueError as exc:
        raise GatewayError(BAD_REQUEST, f"invalid request: {exc}") from None


class _Jobs:
    """Enqueue jobs and read their results, off the event loop."""

    def __init__(self, app: Celery, max_wait: float) -> None:
        self.app = app
        self.max_wait = max_wait

    async def enqueue(
        self, job: SetDefaultCardJob | AssignCardJob | ListCardsJob, *, reused_id: bool
    ) -> str:
        def send() -> str:
            if reused_id and job.job_id is not None:
                # A result left by an earlier run of this job id would be read as
                # this run's answer; the job's idempotency key makes the re-run safe.
                AsyncResult(job.job_id, app=self.app).forget()
            if isinstance(job, SetDefaultCardJob):
                return enqueue_job(job, self.app)
            return enqueue_companion_job(job, self.app)

        try:
            job_id: str = await run_in_threadpool(send)
        except InvalidJob as exc:  # a callback_url the destination rules refuse
            raise _invalid(exc) from None
        except (*_BROKER_ERRORS, RuntimeError) as exc:
            # Celery's Redis result backend subscribes to the job's result before
            # sending it, and raises RuntimeError when it cannot reconnect to do so.
            logger.warning("cannot reach the broker; job not queued (%s)", type(exc).__name__)
            raise GatewayError(
                UNAVAILABLE, "cannot reach the broker; the job was not queued"
            ) from None
        return job_id

    async def result(self, job_id: str) -> Envelope | None:
        try:
            return await run_in_threadpool(get_result, job_id, 0, app=self.app)
        except ResultNotReady:
            return None
        except _BROKER_ERRORS:
            raise GatewayError(UNAVAILABLE, "cannot reach the result backend") from None

    async def wait(self, job_id: str, seconds: float) -> Envelope | None:
        """The job's envelope, polling for up to ``seconds``; None if it has none by then."""
        deadline = time.monotonic() + seconds
        delay = POLL_FIRST_SECONDS
        while True:
            envelope = await self.result(job_id)
            remaining = deadline - time.monotonic()
            if envelope is not None or remaining <= 0:
                return envelope
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, POLL_MAX_SECONDS)

    async def state(self, job_id: str) -> tuple[str, Envelope | None]:
        def read() -> tuple[str, Envelope | None]:
            celery_state = AsyncResult(job_id, app=self.app).state
            if celery_state not in states.READY_STATES:
                return celery_state, None
            return celery_state, get_result(job_id, timeout=0, app=self.app)

        try:
            celery_state, envelope = await run_in_threadpool(read)
        except ResultNotReady:
            return public_state(states.PENDING), None
        except _BROKER_ERRORS:
            raise GatewayError(UNAVAILABLE, "cannot reach the result backend") from None
        return public_state(celery_state), envelope


def _status_url(request: Request, job_id: str) -> str:
    root_path = str(request.scope.get("root_path", ""))
    return root_path + STATUS_PATH.format(job_id=job_id)


def _envelope_response(envelope: Mapping[str, Any]) -> JSONResponse:
    return JSONResponse(dict(envelope), status_code=status_for(envelope))


async def _answer(
    request: Request,
    jobs: _Jobs,
    job: SetDefaultCardJob | AssignCardJob | ListCardsJob,
    wait: float | None,
) -> JSONResponse:
    """Queue ``job``; answer 202 at once, or its envelope (or 504) after waiting."""
    job_id = await jobs.enqueue(job.stamped(), reused_id=job.job_id is not None)
    handle = {"job_id": job_id, "status_url": _status_url(request, job_id)}
    if not wait:
        return JSONResponse(
            {"status": True, "message": "queued", "data": handle},
            status_code=HTTPStatus.ACCEPTED,
            headers={"Location": handle["status_url"]},
        )
    seconds = min(wait, jobs.max_wait)
    envelope = await jobs.wait(job_id, seconds)
    if envelope is None:
        raise GatewayError(
            GATEWAY_TIMEOUT,
            f"job {job_id} has no result after {seconds:g} s; it goes on: poll status_url",
            handle,
        )
    return _envelope_response(envelope)


def _error_response(exc: GatewayError) -> JSONResponse:
    return JSONResponse(error_body(exc.message, exc.data), exc.status, headers=exc.headers)


def _parameter_message(exc: RequestValidationError) -> str:
    problems: list[str] = []
    for error in exc.errors():
        loc = error.get("loc") or ("request",)
        name = str(loc[-1])
        problem = PARAMETER_RULES.get(name, f"{name} is invalid")
        if problem not in problems:
            problems.append(problem)
    return "invalid request: " + "; ".join(problems)


def _install_error_handlers(app: FastAPI) -> None:
    async def gateway_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GatewayError)
        return _error_response(exc)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse(error_body(_parameter_message(exc)), BAD_REQUEST)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = HTTPStatus(exc.status_code).phrase.lower()
        return JSONResponse(error_body(message), exc.status_code, headers=exc.headers)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("%s %s: unexpected error", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            error_body("internal error in the gateway"), HTTPStatus.INTERNAL_SERVER_ERROR
        )

    app.add_exception_handler(GatewayError, gateway_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


def _auth_dependency(settings: Settings) -> Callable[..., Awaitable[None]]:
    try:
        keys = ApiKeys.parse(settings.gateway_api_keys)
    except InvalidApiKeys as exc:
        raise GatewayConfigError(str(exc)) from None
    if not keys and not settings.gateway_dev_no_auth:
        raise GatewayConfigError(
            "CARDS_GATEWAY_API_KEYS is not set: the gateway needs at least one API key "
            "(or --dev-no-auth, for development only)"
        )

    async def require_api_key(credentials: BearerKey) -> None:
        if settings.gateway_dev_no_auth:
            return
        if credentials is None:
            raise GatewayError(
                UNAUTHORIZED, "an API key is required", headers={"WWW-Authenticate": "Bearer"}
            )
        if not keys.accepts(credentials.credentials):
            raise GatewayError(
                UNAUTHORIZED,
                "the API key is not valid",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )

    return require_api_key


def _responses(*statuses: int, ok: type | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route: its success model and the failures it may answer."""
    described: dict[int | str, dict[str, Any]] = {}
    if ok is not None:
        described[HTTPStatus.OK] = {"model": ok, "description": "The job is done and succeeded."}
    for status in statuses:
        model: type = models.Failed
        if status == HTTPStatus.ACCEPTED:
            model = models.Queued
        elif status == GATEWAY_TIMEOUT:
            model = models.TimedOut
        described[status] = {"model": model, "description": HTTPStatus(status).phrase}
    return described


_JOB_FAILURES: Final = (
    HTTPStatus.BAD_REQUEST,
    HTTPStatus.UNAUTHORIZED,
    HTTPStatus.PAYMENT_REQUIRED,
    HTTPStatus.NOT_FOUND,
    HTTPStatus.CONFLICT,
    HTTPStatus.BAD_GATEWAY,
    HTTPStatus.SERVICE_UNAVAILABLE,
)
_WAIT_DESCRIPTION: Final = (
    "Seconds to wait for the job's result (capped by CARDS_GATEWAY_MAX_WAIT_SECONDS). "
    "Absent or 0: answer 202 at once."
)


_BEARER = HTTPBearer(auto_error=False, description="An API key from CARDS_GATEWAY_API_KEYS.")
BearerKey = Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)]
WaitQuery = Annotated[float | None, Query(ge=0, allow_inf_nan=False, description=_WAIT_DESCRIPTION)]
ListWaitQuery = Annotated[
    float | None,
    Query(
        ge=0,
        allow_inf_nan=False,
        description="Seconds to wait for the list; absent: the longest wait "
        "(CARDS_GATEWAY_MAX_WAIT_SECONDS). 0: answer 202 at once.",
    ),
]
CustomerIdPath = Annotated[
    str,
    Path(
        description="The Stripe customer id (cus_…).",
        json_schema_extra={"pattern": models.CUSTOMER_PATTERN, "maxLength": 255},
    ),
]
AccountQuery = Annotated[
    str | None,
    Query(
        description="Connected account (acct_…), sent to Stripe as Stripe-Account.",
        json_schema_extra={"pattern": models.ACCOUNT_PATTERN, "maxLength": 255},
    ),
]
JobIdPath = Annotated[
    str,
    Path(
        description="The job id from the 202 answer.",
        json_schema_extra={"pattern": models.JOB_ID_PATTERN, "maxLength": 128},
    ),
]


def _request_body(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {JSON_MEDIA_TYPE: {"schema": model.model_json_schema()}},
        }
    }


class _GatewayApp(FastAPI):
    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = models.tidy_openapi(super().openapi())
        return self.openapi_schema


def create_app(settings: Settings, celery_app: Celery | None = None) -> FastAPI:
    """The gateway's ASGI app; :class:`GatewayConfigError` if it must not start.

    ``celery_app`` (the producers' app by default) gets a short result backend
    retry policy: see :data:`BACKEND_RETRY_POLICY`.
    """
    require_api_key = _auth_dependency(settings)
    celery = celery_app or default_producer_app()
    celery.conf.result_backend_transport_options = {
        **(celery.conf.result_backend_transport_options or {}),
        "retry_policy": BACKEND_RETRY_POLICY,
    }
    # Workers retry storing results through a Redis restart; a request a person
    # waits on answers 503 at once instead.
    celery.conf.result_backend_always_retry = False
    jobs = _Jobs(celery, settings.gateway_max_wait_seconds)
    limit = settings.gateway_max_body_bytes

    app = _GatewayApp(
        title="cards-worker gateway",
        version="1",
        description="Set a Stripe customer's default card (and assign and list cards) as jobs.",
        redirect_slashes=False,
        docs_url="/docs",
        redoc_url=None,
    )
    _install_error_handlers(app)
    api = APIRouter(prefix="/api", dependencies=[Depends(require_api_key)])

    @api.post(
        "/cards/default",
        status_code=HTTPStatus.ACCEPTED,
        summary="Set a customer's default card (the seed's call)",
        responses=_responses(
            HTTPStatus.ACCEPTED,
            *_JOB_FAILURES,
            PAYLOAD_TOO_LARGE,
            GATEWAY_TIMEOUT,
            ok=models.CustomerUpdated,
        ),
        openapi_extra=_request_body(models.SetDefaultCardRequest),
    )
    async def set_default_card(request: Request, wait: WaitQuery = None) -> JSONResponse:
        fields = await read_json_body(request, limit)
        try:
            job = validate_job(fields)
        except InvalidJob as exc:
            raise _invalid(exc) from None
        return await _answer(request, jobs, job, wait)

    @api.post(
        "/cards/assign",
        status_code=HTTPStatus.ACCEPTED,
        summary="Attach a card to a customer from a token",
        responses=_responses(
            HTTPStatus.ACCEPTED,
            *_JOB_FAILURES,
            PAYLOAD_TOO_LARGE,
            GATEWAY_TIMEOUT,
            ok=models.CardAssigned,
        ),
        openapi_extra=_request_body(models.AssignCardRequest),
    )
    async def assign_card(request: Request, wait: WaitQuery = None) -> JSONResponse:
        fields = await read_json_body(request, limit)
        try:
            job = validate_assign_job(fields)
        except InvalidJob as exc:
            raise _invalid(exc) from None
        return await _answer(request, jobs, job, wait)

    @api.get(
        "/cards/{customerId}",
        summary="List a customer's cards",
        responses=_responses(
            HTTPStatus.ACCEPTED, *_JOB_FAILURES, GATEWAY_TIMEOUT, ok=models.CardsListed
        ),
    )
    async def list_cards(
        request: Request,
        customerId: CustomerIdPath,  # the seed's name for it
        stripe_account: AccountQuery = None,
        wait: ListWaitQuery = None,
    ) -> JSONResponse:
        _checked(lambda: check_stripe_id(customerId, "customerId", ("cus_",)))
        fields: dict[str, str] = {"userId": customerId}
        if stripe_account is not None:
            fields["stripe_account"] = stripe_account
        try:
            job = validate_list_job(fields)
        except InvalidJob as exc:
            raise _invalid(exc) from None
        return await _answer(request, jobs, job, jobs.max_wait if wait is None else wait)

    @api.get(
        "/jobs/{job_id}",
        summary="A job's state, and its envelope once done",
        responses={
            HTTPStatus.OK: {"model": models.JobStatus, "description": "The job's state."},
            **_responses(BAD_REQUEST, UNAUTHORIZED, UNAVAILABLE),
        },
    )
    async def job_status(
        job_id: JobIdPath,
    ) -> JSONResponse:
        _checked(lambda: check_job_id(job_id))
        state, envelope = await jobs.state(job_id)
        return JSONResponse(
            {
                "status": True,
                "message": f"job is {state}",
                "data": {"job_id": job_id, "state": state, "result": envelope},
            }
        )

    app.include_router(api)

    @app.get(
        "/healthz",
        summary="Liveness: the broker and result backend answer",
        responses={
            HTTPStatus.OK: {"model": models.Health, "description": "Healthy."},
            HTTPStatus.SERVICE_UNAVAILABLE: {
                "model": models.Health,
                "description": "The broker or result backend does not answer.",
            },
        },
    )
    async def healthz() -> JSONResponse:
        try:
            await run_in_threadpool(check_connections, jobs.app, HEALTH_TIMEOUT_SECONDS)
        except Unreachable:
            return JSONResponse(
                {
                    "status": False,
                    "message": "cannot reach the broker or result backend",
                    "data": None,
                },
                UNAVAILABLE,
            )
        return JSONResponse({"status": True, "message": "ok", "data": None})

    return app


def serve(host: str, port: int, *, dev_no_auth: bool = False) -> None:
    """Run the gateway on uvicorn until SIGINT/SIGTERM; :class:`GatewayConfigError` if refused."""
    import uvicorn

    settings = get_settings()
    if dev_no_auth:
        settings = settings.model_copy(update={"gateway_dev_no_auth": True})
    app = create_app(settings)
    if settings.gateway_dev_no_auth:
        sys.stderr.write(
            "warning: the gateway runs WITHOUT authentication (dev-no-auth); never expose it\n"
        )
    uvicorn.run(app, host=host, port=port, server_header=False, log_level="info")

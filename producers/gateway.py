"""The seed's HTTP API, served for real: ``cards gateway`` runs this app on uvicorn.

``POST /api/cards/default`` takes the seed's body unchanged and queues a
``cards.set_default_card`` job: ``202`` with the job id and a status URL, or,
with ``?wait=SECONDS``, the seed's response itself once the job is done (the
envelope, with an HTTP status from :mod:`producers.http_errors`), or ``504``
if the wait ran out while the job goes on. ``POST /api/cards/assign`` and
``GET /api/cards/{customerId}`` are the seed's companion calls, run as jobs
the same way; ``GET /api/jobs/{job_id}`` reads a job's state and result.

The gateway is a producer: it validates with the shared contracts, sends jobs
by task name and reads envelopes from the result backend. It never imports
Stripe or the worker, so it scales and deploys apart from them. Waiting polls
the backend from the event loop instead of parking a thread per request.

Every answer is ``{status, message, data}``, errors included; bad input gets a
4xx naming the field, never a traceback or a 500. ``/api`` needs a bearer API
key (:mod:`producers.auth`) holding the route's scope; ``/healthz`` and
``/openapi.json`` do not. A job id belongs to the key's tenant
(:mod:`producers.ownership`): only it (or ``admin``) reads or repeats the job.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
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

from cards.companion_jobs import (
    ASSIGN_TASK_NAME,
    LIST_TASK_NAME,
    AssignCardJob,
    ListCardsJob,
    validate_assign_job,
    validate_list_job,
)
from cards.deadletters import is_dead_letter
from cards.envelope import Envelope, ErrorKind, failure
from cards.jobs import (
    TASK_NAME,
    InvalidJob,
    SetDefaultCardJob,
    check_job_id,
    check_stripe_id,
    validate_job,
)
from cards.settings import Settings, get_settings
from producers import api_models as models
from producers.auth import ApiKeys, Caller, InvalidApiKeys, Scope
from producers.client import (
    ResultNotReady,
    Unreachable,
    check_callback_url,
    check_connections,
    check_request_time,
    get_result,
)
from producers.client import enqueue as enqueue_companion_job
from producers.client import enqueue as enqueue_job
from producers.client import producer_app as default_producer_app
from producers.http_errors import (
    BAD_REQUEST,
    CONFLICT,
    FORBIDDEN,
    GATEWAY_TIMEOUT,
    NOT_FOUND,
    PAYLOAD_TOO_LARGE,
    UNAUTHORIZED,
    UNAVAILABLE,
    error_body,
    status_for,
)
from producers.ownership import Claim, ClaimOutcome, JobOwners, job_digest

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


AnyJob = SetDefaultCardJob | AssignCardJob | ListCardsJob


def _task_name(job: AnyJob) -> str:
    if isinstance(job, SetDefaultCardJob):
        return TASK_NAME
    return ASSIGN_TASK_NAME if isinstance(job, AssignCardJob) else LIST_TASK_NAME


def _job_id_taken(job_id: str) -> GatewayError:
    answer = failure(
        f"job_id {job_id} is already used by another request (another API key, other "
        "fields, or another kind of job); nothing was changed: send a new job_id",
        ErrorKind.IDEMPOTENCY_CONFLICT,
        param="job_id",
    )
    return GatewayError(CONFLICT, answer["message"], answer["data"])


class _Jobs:
    """Enqueue jobs and read their results, off the event loop.

    A job id is claimed for its tenant and fields (:mod:`producers.ownership`)
    before anything is sent, read or deleted: a repeat by the same tenant with
    the same fields is the same job (sent again only if it never reached the
    queue, or ended a dead letter); anything else is a 409 that changes nothing.
    """

    def __init__(self, app: Celery, max_wait: float, owners: JobOwners) -> None:
        self.app = app
        self.max_wait = max_wait
        self.owners = owners

    def _send(self, job: AnyJob) -> None:
        if isinstance(job, SetDefaultCardJob):
            enqueue_job(job, self.app)
        else:
            enqueue_companion_job(job, self.app)

    def _submit(self, job: AnyJob, tenant: str) -> str:
        if isinstance(job, SetDefaultCardJob):
            check_callback_url(job)
        check_request_time(job)
        claim = Claim(tenant, job_digest(_task_name(job), job.to_task_kwargs()))
        stamped = job.stamped()
        job_id = stamped.job_id
        assert job_id is not None  # stamped() always sets it
        outcome, stored = self.owners.claim(job_id, claim)
        if outcome is ClaimOutcome.CONFLICT:
            raise _job_id_taken(job_id)
        try:
            if not self._send_needed(job, job_id, outcome, stored):
                return job_id  # the same job, queued or done: nothing to send
            self._send(stamped)
        except BaseException:
            if outcome is ClaimOutcome.NEW:  # the claim this request made, and nothing sent
                self.owners.release(job_id, claim)
            raise
        self.owners.mark_sent(job_id, claim)
        return job_id

    def _send_needed(self, job: AnyJob, job_id: str, outcome: ClaimOutcome, stored: Claim) -> bool:
        """Must this request send its job? A repeat of a sent job sends again only if that
        job ended a dead letter (a transient failure; the same idempotency key)."""
        if outcome is ClaimOutcome.NEW:
            if job.job_id is not None and AsyncResult(job_id, app=self.app).state != states.PENDING:
                # A job sent by another producer, not through the gateway: not ours to touch.
                raise _job_id_taken(job_id)
            return True
        if not stored.sent:
            return True  # an earlier request claimed it and died before sending
        if not self._ended_as_dead_letter(job_id):
            return False
        # This tenant's own job, accepted again: its old answer goes, its claim says "to send".
        self.owners.mark_sent(job_id, stored, sent=False)
        AsyncResult(job_id, app=self.app).forget()
        return True

    def _ended_as_dead_letter(self, job_id: str) -> bool:
        try:
            return is_dead_letter(get_result(job_id, 0, app=self.app))
        except ResultNotReady:
            return False

    async def enqueue(self, job: AnyJob, caller: Caller) -> str:
        try:
            job_id: str = await run_in_threadpool(self._submit, job, caller.tenant)
        except InvalidJob as exc:  # a callback_url or requested_at the rules refuse
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

    async def state(self, job_id: str, caller: Caller) -> tuple[str, Envelope | None]:
        def read() -> tuple[str, Envelope | None]:
            if not caller.reads(self.owners.owner(job_id)):
                raise GatewayError(NOT_FOUND, f"no job {job_id} for this API key")
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
    job: AnyJob,
    wait: float | None,
    caller: Caller,
) -> JSONResponse:
    """Queue ``job``; answer 202 at once, or its envelope (or 504) after waiting."""
    job_id = await jobs.enqueue(job, caller)
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


#: Who calls when the gateway runs with --dev-no-auth: one tenant that may do everything.
DEV_CALLER: Final = Caller("dev", frozenset(Scope))


def _auth_dependency(settings: Settings, dev_no_auth: bool) -> Callable[..., Awaitable[Caller]]:
    try:
        keys = ApiKeys.parse(settings.gateway_api_keys)
    except InvalidApiKeys as exc:
        raise GatewayConfigError(str(exc)) from None
    if not keys and not dev_no_auth:
        raise GatewayConfigError(
            "CARDS_GATEWAY_API_KEYS is not set: the gateway needs at least one API key "
            "(or --dev-no-auth on a loopback --host, for development only)"
        )

    async def require_api_key(credentials: BearerKey) -> Caller:
        if dev_no_auth:
            return DEV_CALLER
        if credentials is None:
            raise GatewayError(
                UNAUTHORIZED, "an API key is required", headers={"WWW-Authenticate": "Bearer"}
            )
        caller = keys.caller(credentials.credentials)
        if caller is None:
            raise GatewayError(
                UNAUTHORIZED,
                "the API key is not valid",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return caller

    return require_api_key


def _scoped(
    require_api_key: Callable[..., Awaitable[Caller]], scope: Scope
) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the caller, if its key holds ``scope``; else 403."""

    async def require_scope(caller: Caller = Depends(require_api_key)) -> Caller:  # noqa: B008
        if not caller.may(scope):
            raise GatewayError(FORBIDDEN, f"this API key does not hold the {scope.value} scope")
        return caller

    return require_scope


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
    HTTPStatus.FORBIDDEN,
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


def create_app(
    settings: Settings,
    celery_app: Celery | None = None,
    *,
    owners: JobOwners | None = None,
    dev_no_auth: bool = False,
) -> FastAPI:
    """The gateway's ASGI app; :class:`GatewayConfigError` if it must not start.

    ``celery_app`` (the producers' app by default) gets a short result backend
    retry policy: see :data:`BACKEND_RETRY_POLICY`. ``owners`` (Redis at
    ``CARDS_STATE_REDIS_URL`` by default) holds the job-id claims.
    """
    require_api_key = _auth_dependency(settings, dev_no_auth)
    celery = celery_app or default_producer_app()
    celery.conf.result_backend_transport_options = {
        **(celery.conf.result_backend_transport_options or {}),
        "retry_policy": BACKEND_RETRY_POLICY,
    }
    # Workers retry storing results through a Redis restart; a request a person
    # waits on answers 503 at once instead.
    celery.conf.result_backend_always_retry = False
    if owners is None:
        owners = JobOwners(
            redis.Redis.from_url(
                settings.job_state_url,
                socket_timeout=HEALTH_TIMEOUT_SECONDS,
                retry_on_timeout=False,
            ),
            settings.max_job_age_seconds + settings.result_expires_seconds,
        )
    jobs = _Jobs(celery, settings.gateway_max_wait_seconds, owners)
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
    may_set_default = _scoped(require_api_key, Scope.DEFAULT)
    may_assign = _scoped(require_api_key, Scope.ASSIGN)
    may_list = _scoped(require_api_key, Scope.LIST)
    may_read = _scoped(require_api_key, Scope.READ)

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
    async def set_default_card(
        request: Request,
        wait: WaitQuery = None,
        caller: Caller = Depends(may_set_default),  # noqa: B008
    ) -> JSONResponse:
        fields = await read_json_body(request, limit)
        try:
            job = validate_job(fields)
        except InvalidJob as exc:
            raise _invalid(exc) from None
        return await _answer(request, jobs, job, wait, caller)

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
    async def assign_card(
        request: Request,
        wait: WaitQuery = None,
        caller: Caller = Depends(may_assign),  # noqa: B008
    ) -> JSONResponse:
        fields = await read_json_body(request, limit)
        try:
            job = validate_assign_job(fields)
        except InvalidJob as exc:
            raise _invalid(exc) from None
        return await _answer(request, jobs, job, wait, caller)

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
        caller: Caller = Depends(may_list),  # noqa: B008
    ) -> JSONResponse:
        _checked(lambda: check_stripe_id(customerId, "customerId", ("cus_",)))
        fields: dict[str, str] = {"userId": customerId}
        if stripe_account is not None:
            fields["stripe_account"] = stripe_account
        try:
            job = validate_list_job(fields)
        except InvalidJob as exc:
            raise _invalid(exc) from None
        return await _answer(request, jobs, job, jobs.max_wait if wait is None else wait, caller)

    @api.get(
        "/jobs/{job_id}",
        summary="A job's state, and its envelope once done",
        responses={
            HTTPStatus.OK: {"model": models.JobStatus, "description": "The job's state."},
            **_responses(BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, UNAVAILABLE),
        },
    )
    async def job_status(
        job_id: JobIdPath,
        caller: Caller = Depends(may_read),  # noqa: B008
    ) -> JSONResponse:
        _checked(lambda: check_job_id(job_id))
        state, envelope = await jobs.state(job_id, caller)
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


class _NoQueryStrings(logging.Filter):
    """Drop the query string from uvicorn's access log lines: a key or a customer id
    sent there must not land in a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def _log_config() -> dict[str, Any]:
    """uvicorn's logging configuration, its access log without query strings."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["no_query"] = {"()": _NoQueryStrings}
    config["handlers"]["access"]["filters"] = ["no_query"]
    return config


def is_loopback_host(host: str) -> bool:
    """Does ``--host`` listen on loopback only? (Pure.)"""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(host: str, port: int, *, dev_no_auth: bool = False) -> None:
    """Run the gateway on uvicorn until SIGINT/SIGTERM; :class:`GatewayConfigError` if refused.

    ``dev_no_auth`` (the command line's ``--dev-no-auth``, never a setting) serves
    without keys, and only on a loopback ``host``.
    """
    import uvicorn

    if dev_no_auth and not is_loopback_host(host):
        raise GatewayConfigError(
            "--dev-no-auth serves without keys, so only on a loopback --host (127.0.0.1, ::1)"
        )
    app = create_app(get_settings(), dev_no_auth=dev_no_auth)
    if dev_no_auth:
        sys.stderr.write(
            "warning: the gateway runs WITHOUT authentication (dev-no-auth); never expose it\n"
        )
    uvicorn.run(
        app, host=host, port=port, server_header=False, log_level="info", log_config=_log_config()
    )

"""The HTTP API's routes: the seed's calls as jobs, a job's status, ``/healthz``, ``/readyz``.

A job route validates with the shared contract, queues the job and answers
``202`` with its status URL, or, with ``?wait=SECONDS``, the job's envelope
(status from :func:`producers.http.errors.status_for`) or ``504`` if the wait
ran out. ``/api`` routes need a key holding the route's scope; ``/healthz``
(liveness) and ``/readyz`` (readiness) do not. Every answer is ``{status, message, data}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from cards import ids
from cards.companion_jobs import validate_assign_job, validate_list_job
from cards.jobs import InvalidJob, check_job_id, check_stripe_id, validate_job
from producers.client import Unreachable, check_connections
from producers.http import models
from producers.http.auth import Caller, Scope, scoped
from producers.http.body import JSON_MEDIA_TYPE, read_json_body
from producers.http.dispatch import AnyJob, Dispatcher
from producers.http.errors import (
    BAD_REQUEST,
    FORBIDDEN,
    GATEWAY_TIMEOUT,
    NOT_FOUND,
    PAYLOAD_TOO_LARGE,
    UNAUTHORIZED,
    UNAVAILABLE,
    GatewayError,
    checked,
    invalid,
    status_for,
)
from producers.http.shedding import RETRY_AFTER_SECONDS, InFlight

__all__ = ["HEALTH_TIMEOUT_SECONDS", "STATUS_PATH", "add_routes", "api_router"]

HEALTH_TIMEOUT_SECONDS: Final = 2
STATUS_PATH: Final = "/api/jobs/{job_id}"

#: A dependency that answers the calling :class:`Caller` (or refuses the request).
CallerDependency = Callable[..., Awaitable[Caller]]

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
        json_schema_extra=ids.CUSTOMER.json_schema(),
    ),
]
AccountQuery = Annotated[
    str | None,
    Query(
        description="Connected account (acct_…), sent to Stripe as Stripe-Account.",
        json_schema_extra=ids.ACCOUNT.json_schema(),
    ),
]
JobIdPath = Annotated[
    str,
    Path(
        description="The job id from the 202 answer.",
        json_schema_extra=ids.JOB_ID.json_schema(),
    ),
]


def _request_body(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {JSON_MEDIA_TYPE: {"schema": model.model_json_schema()}},
        }
    }


def _validated(validate: Callable[[object], AnyJob], fields: object) -> AnyJob:
    """``validate(fields)``; the contract's refusal as a 400."""
    try:
        return validate(fields)
    except InvalidJob as exc:
        raise invalid(exc) from None


def _status_url(request: Request, job_id: str) -> str:
    root_path = str(request.scope.get("root_path", ""))
    return root_path + STATUS_PATH.format(job_id=job_id)


async def _answer(
    request: Request,
    jobs: Dispatcher,
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


def _envelope_response(envelope: Mapping[str, Any]) -> JSONResponse:
    return JSONResponse(dict(envelope), status_code=status_for(envelope))


@dataclass(frozen=True)
class BodyJobRoute:
    """A ``POST`` route whose JSON body is a job: the two differ only in these."""

    path: str
    name: str  # the endpoint's name, and so its OpenAPI operationId
    summary: str
    scope: Scope
    validate: Callable[[object], AnyJob]
    request_model: type[BaseModel]
    ok: type[BaseModel]


BODY_JOB_ROUTES: Final = (
    BodyJobRoute(
        "/cards/default",
        "set_default_card",
        "Set a customer's default card (the seed's call)",
        Scope.DEFAULT,
        validate_job,
        models.SetDefaultCardRequest,
        models.CustomerUpdated,
    ),
    BodyJobRoute(
        "/cards/assign",
        "assign_card",
        "Attach a card to a customer from a token",
        Scope.ASSIGN,
        validate_assign_job,
        models.AssignCardRequest,
        models.CardAssigned,
    ),
)


def _add_body_job_route(
    api: APIRouter,
    route: BodyJobRoute,
    jobs: Dispatcher,
    require_api_key: CallerDependency,
    body_limit: int,
) -> None:
    """``POST route.path``: the job in the JSON body, checked by ``route.validate``."""

    @api.post(
        route.path,
        name=route.name,
        status_code=HTTPStatus.ACCEPTED,
        summary=route.summary,
        responses=models.responses(
            HTTPStatus.ACCEPTED, *_JOB_FAILURES, PAYLOAD_TOO_LARGE, GATEWAY_TIMEOUT, ok=route.ok
        ),
        openapi_extra=_request_body(route.request_model),
    )
    async def submit_job(
        request: Request,
        wait: WaitQuery = None,
        caller: Caller = Depends(scoped(require_api_key, route.scope)),  # noqa: B008
    ) -> JSONResponse:
        job = _validated(route.validate, await read_json_body(request, body_limit))
        return await _answer(request, jobs, job, wait, caller)


def api_router(jobs: Dispatcher, require_api_key: CallerDependency, body_limit: int) -> APIRouter:
    """The ``/api`` routes, each refused without a key holding its scope."""
    api = APIRouter(prefix="/api", dependencies=[Depends(require_api_key)])
    for route in BODY_JOB_ROUTES:
        _add_body_job_route(api, route, jobs, require_api_key, body_limit)
    may_list = scoped(require_api_key, Scope.LIST)
    may_read = scoped(require_api_key, Scope.READ)

    @api.get(
        "/cards/{customerId}",
        summary="List a customer's cards",
        responses=models.responses(
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
        checked(lambda: check_stripe_id(customerId, "customerId", ("cus_",)))
        fields: dict[str, str] = {"userId": customerId}
        if stripe_account is not None:
            fields["stripe_account"] = stripe_account
        job = _validated(validate_list_job, fields)
        return await _answer(request, jobs, job, jobs.max_wait if wait is None else wait, caller)

    @api.get(
        "/jobs/{job_id}",
        summary="A job's state, and its envelope once done",
        responses={
            HTTPStatus.OK: {"model": models.JobStatus, "description": "The job's state."},
            **models.responses(BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, UNAVAILABLE),
        },
    )
    async def job_status(
        job_id: JobIdPath,
        caller: Caller = Depends(may_read),  # noqa: B008
    ) -> JSONResponse:
        checked(lambda: check_job_id(job_id))
        state, envelope, last_error = await jobs.state(job_id, caller)
        data = {"job_id": job_id, "state": state, "result": envelope, "last_error": last_error}
        return JSONResponse({"status": True, "message": f"job is {state}", "data": data})

    return api


def add_routes(
    app: FastAPI,
    jobs: Dispatcher,
    require_api_key: CallerDependency,
    body_limit: int,
    in_flight: InFlight,
) -> None:
    """The ``/api`` routes (:func:`api_router`), then ``/healthz`` (liveness: do the broker
    and the result backend answer?) and ``/readyz`` (is this process below its in-flight
    cap?); neither needs a key."""
    app.include_router(api_router(jobs, require_api_key, body_limit))

    @app.get(
        "/readyz",
        summary="Readiness: this process takes requests (it is below its in-flight cap)",
        responses={
            HTTPStatus.OK: {"model": models.Readiness, "description": "Ready."},
            HTTPStatus.SERVICE_UNAVAILABLE: {
                "model": models.Readiness,
                "description": "Saturated: new requests are answered 503; send them elsewhere.",
            },
        },
    )
    async def readyz() -> JSONResponse:
        data = {"in_flight": in_flight.count, "max_in_flight": in_flight.cap}
        if in_flight.saturated:
            return JSONResponse(
                {"status": False, "message": "saturated", "data": data},
                UNAVAILABLE,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        return JSONResponse({"status": True, "message": "ready", "data": data})

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

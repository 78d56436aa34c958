"""Sending the HTTP API's jobs and reading their results, off the event loop.

A job id is claimed for its tenant and fields (:mod:`producers.http.ownership`)
before anything is sent, read or deleted: a repeat by the same tenant with the
same fields is the same job (sent again only if it never reached the queue, or
ended a dead letter); anything else is a 409 that changes nothing. Claims and
sends run on the event loop (:mod:`producers.http.publish`), Celery's other
blocking calls in the thread pool; a waiting request is woken by the result feed
(:mod:`producers.http.result_feed`), or polls with ``CARDS_GATEWAY_WAIT=poll``.
An unreachable broker or result backend is a 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, Final

import kombu.exceptions
import redis
from celery import Celery, states
from celery.exceptions import BackendError
from celery.result import AsyncResult
from starlette.concurrency import run_in_threadpool

from cards.companion_jobs import AssignCardJob, ListCardsJob
from cards.deadletters import is_dead_letter
from cards.envelope import Envelope
from cards.jobs import InvalidJob, SetDefaultCardJob
from cards.kinds import kind_of
from producers.client import (
    ResultNotReady,
    Unreachable,
    check_callback_url,
    check_request_time,
    envelope_of,
    get_result,
    retry_cause,
)
from producers.http.auth import Caller
from producers.http.errors import NOT_FOUND, UNAVAILABLE, GatewayError, invalid, job_id_taken
from producers.http.ownership import Claim, ClaimOutcome, JobOwners, job_digest
from producers.http.publish import Publisher
from producers.http.result_feed import ResultFeed

__all__ = [
    "BACKEND_RETRY_POLICY",
    "PUBLIC_STATES",
    "AnyJob",
    "Dispatcher",
    "fail_fast",
    "public_state",
]

logger = logging.getLogger(__name__)

#: Polling the result backend while a request waits: first after 50 ms, then
#: doubling up to every 500 ms (a job against Stripe takes 0.2-2 s).
POLL_FIRST_SECONDS: Final = 0.05
POLL_MAX_SECONDS: Final = 0.5
#: With Redis down, a request gets its 503 in about a second instead of after
#: Celery's default twenty reconnection attempts to the result backend.
BACKEND_RETRY_POLICY: Final = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}

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

# BackendError: with result_backend_always_retry, Celery wraps a result store
# that stays unreachable after its retries in BackendGetMetaError/BackendStoreError.
_BROKER_ERRORS = (
    kombu.exceptions.OperationalError,
    redis.RedisError,
    OSError,
    Unreachable,
    BackendError,
)

AnyJob = SetDefaultCardJob | AssignCardJob | ListCardsJob


def public_state(celery_state: str) -> str:
    """The API's name for a Celery state (``queued``, ``retrying``, ``done``, ...). Pure."""
    return PUBLIC_STATES.get(celery_state, celery_state.lower())


def fail_fast(celery: Celery) -> Celery:
    """``celery``, its result backend retrying only briefly (:data:`BACKEND_RETRY_POLICY`)."""
    celery.conf.result_backend_transport_options = {
        **(celery.conf.result_backend_transport_options or {}),
        "retry_policy": BACKEND_RETRY_POLICY,
    }
    # Workers retry storing results through a Redis restart; a request a person
    # waits on answers 503 at once instead.
    celery.conf.result_backend_always_retry = False
    # Celery subscribes to every job it sends (a SUBSCRIBE per job on a connection
    # nobody reads here) and unsubscribes when the result object goes (from
    # AsyncResult.__del__); the gateway waits through its own result feed instead.
    # The Redis backend is per thread, so every thread's backend leaves both out.
    make_backend = celery._get_backend  # type: ignore[attr-defined]

    def backend_without_subscriptions() -> Any:
        return _without_subscriptions(make_backend())

    celery._get_backend = backend_without_subscriptions  # type: ignore[attr-defined]
    _without_subscriptions(celery.backend)  # this thread's, if already built
    return celery


def _without_subscriptions(backend: Any) -> Any:
    """``backend``, its per-send subscription and per-result unsubscription left out."""
    backend.on_task_call = _no_subscription
    backend.on_result_fulfilled = _no_unsubscription
    return backend


def _no_subscription(producer: object, task_id: str) -> None:
    """Celery's per-send subscription, left out: see :func:`fail_fast`."""


def _no_unsubscription(result: object) -> None:
    """Celery's per-result unsubscription, left out: see :func:`fail_fast`."""


class Dispatcher:
    """Enqueue jobs and read their results for the HTTP API; failures are :class:`GatewayError`."""

    def __init__(
        self,
        app: Celery,
        max_wait: float,
        owners: JobOwners,
        feed: ResultFeed | None = None,
        *,
        claims_on_broker: bool = False,
    ) -> None:
        self.app = app
        self.max_wait = max_wait
        self.owners = owners
        self.feed = feed
        self.publisher = Publisher(app)
        #: Are the claims on the broker's Redis (the default settings)?
        self.claims_on_broker = claims_on_broker

    async def _submit(self, job: AnyJob, tenant: str) -> str:
        if isinstance(job, SetDefaultCardJob) and job.callback_url is not None:
            await run_in_threadpool(check_callback_url, job)  # resolves the host
        check_request_time(job)
        claim = Claim(tenant, job_digest(kind_of(job).task_name, job.to_task_kwargs()))
        stamped = job.stamped()
        job_id = stamped.job_id
        assert job_id is not None  # stamped() always sets it
        if job.job_id is None and self.claims_on_broker:
            return await self._send_new(stamped, job_id, claim)
        outcome, stored = await self.owners.claim(job_id, claim)
        if outcome is ClaimOutcome.CONFLICT:
            raise job_id_taken(job_id)
        try:
            if not await self._send_needed(job, job_id, outcome, stored):
                return job_id  # the same job, queued or done: nothing to send
            # Claims on the broker's Redis: marked in the send's own pipeline.
            then = (self.owners.sent_command(job_id, claim),) if self.claims_on_broker else ()
            marked = await self.publisher.send(stamped, *then) and bool(then)
        except BaseException:
            if outcome is ClaimOutcome.NEW:  # the claim this request made, and nothing sent
                await self.owners.release(job_id, claim)
            raise
        if not marked:
            await self.owners.mark_sent(job_id, claim)
        return job_id

    async def _send_new(self, stamped: AnyJob, job_id: str, claim: Claim) -> str:
        """Send a job under an id this request made up: no one else can hold it, so its
        claim, already sent, goes into the send's own transaction (one round trip)."""
        sent = Claim(claim.tenant, claim.digest, sent=True)
        if not await self.publisher.send(stamped, self.owners.claim_command(job_id, sent)):
            # Celery sent it (the thread pool): claimed right after, still before the 202.
            await self.owners.claim(job_id, sent)
        return job_id

    async def _send_needed(
        self, job: AnyJob, job_id: str, outcome: ClaimOutcome, stored: Claim
    ) -> bool:
        """Must this request send its job? A repeat of a sent job sends again only if that
        job ended a dead letter (a transient failure; the same idempotency key)."""
        if outcome is ClaimOutcome.NEW:
            if job.job_id is not None and await run_in_threadpool(self._known, job_id):
                # A job sent by another producer, not through the gateway: not ours to touch.
                raise job_id_taken(job_id)
            return True
        if not stored.sent:
            return True  # an earlier request claimed it and died before sending
        if not await run_in_threadpool(self._ended_as_dead_letter, job_id):
            return False
        # This tenant's own job, accepted again: its old answer goes, its claim says "to send".
        await self.owners.mark_sent(job_id, stored, sent=False)
        await run_in_threadpool(AsyncResult(job_id, app=self.app).forget)
        return True

    def _known(self, job_id: str) -> bool:
        """Does the result backend know ``job_id`` (a state past PENDING)?"""
        return AsyncResult(job_id, app=self.app).state != states.PENDING

    def _ended_as_dead_letter(self, job_id: str) -> bool:
        try:
            return is_dead_letter(get_result(job_id, 0, app=self.app))
        except ResultNotReady:
            return False

    async def enqueue(self, job: AnyJob, caller: Caller) -> str:
        try:
            # Shielded: a request cancelled mid-send still marks (or releases) its claim.
            job_id: str = await asyncio.shield(self._submit(job, caller.tenant))
        except InvalidJob as exc:  # a callback_url or requested_at the rules refuse
            raise invalid(exc) from None
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
        """The job's envelope, waiting up to ``seconds``; None if it has none by then.

        Woken by the result feed (push) if there is one, else by polling."""
        if self.feed is None:
            return await self._poll(job_id, seconds)
        try:
            meta = await self.feed.wait(job_id, seconds)
        except _BROKER_ERRORS:
            raise GatewayError(UNAVAILABLE, "cannot reach the result backend") from None
        return None if meta is None else envelope_of(job_id, meta["status"], meta.get("result"))

    async def _poll(self, job_id: str, seconds: float) -> Envelope | None:
        deadline = time.monotonic() + seconds
        delay = POLL_FIRST_SECONDS
        while True:
            envelope = await self.result(job_id)
            remaining = deadline - time.monotonic()
            if envelope is not None or remaining <= 0:
                return envelope
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, POLL_MAX_SECONDS)

    async def state(self, job_id: str, caller: Caller) -> tuple[str, Envelope | None, str | None]:
        """The job's public state, its envelope once done, and a retrying job's last
        error; 404 for a job not ``caller``'s."""
        try:
            owner = await self.owners.owner(job_id)
        except _BROKER_ERRORS:
            raise GatewayError(UNAVAILABLE, "cannot reach the result backend") from None
        if not caller.reads(owner):
            raise GatewayError(NOT_FOUND, f"no job {job_id} for this API key")

        def read() -> tuple[str, Envelope | None, str | None]:
            result: AsyncResult[Any] = AsyncResult(job_id, app=self.app)
            celery_state = result.state
            if celery_state not in states.READY_STATES:
                return celery_state, None, retry_cause(result)
            return celery_state, get_result(job_id, timeout=0, app=self.app), None

        try:
            celery_state, envelope, last_error = await run_in_threadpool(read)
        except ResultNotReady:
            return public_state(states.PENDING), None, None
        except _BROKER_ERRORS:
            raise GatewayError(UNAVAILABLE, "cannot reach the result backend") from None
        return public_state(celery_state), envelope, last_error

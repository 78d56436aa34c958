"""The producer client: enqueue jobs of every kind and read their results, by task name only.

Producers share the job contracts with the worker (:mod:`cards.jobs`,
:mod:`cards.companion_jobs`) but never import the worker or Stripe: they
validate, then :func:`enqueue` sends the job under its kind's task name
(:mod:`cards.kinds`) through a client-only Celery app configured from
``celeryconfig``, with the job id as the Celery task id.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Protocol, cast

import kombu
from celery import Celery, states
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult

from cards.companion_jobs import validate_assign_job, validate_list_job
from cards.destinations import RefusedDestination, check_destination
from cards.envelope import Envelope, ErrorKind, RetryCause, failure
from cards.jobs import InvalidJob, SetDefaultCardJob, check_requested_at, validate_job
from cards.kinds import Job, kind_of
from cards.messaging import celery_app
from cards.redaction import event_reprs
from cards.settings import get_settings, mask_url_password

__all__ = [
    "InvalidJob",
    "ResultNotReady",
    "Unreachable",
    "build_job",
    "check_callback_url",
    "check_connections",
    "check_request_time",
    "enqueue",
    "enqueue_assign_card",
    "enqueue_list_cards",
    "enqueue_set_default_card",
    "envelope_of",
    "get_result",
    "producer_app",
    "retry_cause",
    "send_job",
]

#: How long a connectivity check waits for the broker and backend.
PING_TIMEOUT_SECONDS = 3


class Unreachable(ConnectionError):
    """The broker or the result backend does not answer."""


class ResultNotReady(TimeoutError):
    """The job has no result yet (still queued, running or retrying, or unknown)."""

    def __init__(self, job_id: str, state: str, last_error: str | None = None) -> None:
        self.job_id = job_id
        self.state = state
        self.last_error = last_error
        why = f"; last error: {last_error}" if last_error else ""
        super().__init__(f"job {job_id} has no result yet (state {state}{why})")


def retry_cause(result: AsyncResult[Any]) -> str | None:
    """A retrying job's last error (its RetryCause, ``"<reason>: <message>"``), any URL
    password masked; None unless the job is retrying."""
    if result.state != states.RETRY:
        return None
    info = result.info
    return mask_url_password(str(info)) if isinstance(info, RetryCause) else None


def _not_ready(job_id: str, result: AsyncResult[Any]) -> ResultNotReady:
    """:class:`ResultNotReady`, with a retrying job's last error."""
    return ResultNotReady(job_id, result.state, retry_cause(result))


@lru_cache(maxsize=1)
def producer_app() -> Celery:
    return celery_app("cards-producer")


def check_connections(app: Celery | None = None, timeout: int = PING_TIMEOUT_SECONDS) -> None:
    """Fail fast with :class:`Unreachable` unless the broker and result backend answer.

    Celery itself retries for tens of seconds before giving up, which suits a
    long-running service but not a command a person is waiting on.
    """
    app = app or producer_app()
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
        client = getattr(app.backend, "client", None)
        if client is not None:
            client.ping()
    except Exception as exc:  # kombu and redis raise many types for "no answer"
        raise Unreachable(type(exc).__name__) from None


def build_job(
    user_id: str,
    default_source: str,
    *,
    job_id: str | None = None,
    requested_at: datetime | str | None = None,
    stripe_account: str | None = None,
    callback_url: str | None = None,
) -> SetDefaultCardJob:
    """A validated job with its id and request time stamped; :class:`InvalidJob` if wrong."""
    fields: dict[str, Any] = {"userId": user_id, "default_source": default_source}
    optional = {
        "job_id": job_id,
        "requested_at": requested_at,
        "stripe_account": stripe_account,
        "callback_url": callback_url,
    }
    fields.update({k: v for k, v in optional.items() if v is not None})
    return validate_job(fields).stamped()


def check_callback_url(job: SetDefaultCardJob) -> None:
    """:class:`InvalidJob` unless the job's callback_url (if any) passes the SSRF rules.

    Resolves the host (see :mod:`cards.destinations`). The worker checks again
    when it sends, against the address it connects to.
    """
    if job.callback_url is None:
        return
    try:
        check_destination(str(job.callback_url), get_settings().callback_allowlist)
    except RefusedDestination as exc:
        raise InvalidJob([str(exc)], ["callback_url"]) from None


class _Requested(Protocol):
    @property
    def requested_at(self) -> datetime | None: ...


def check_request_time(job: _Requested, now: datetime | None = None) -> None:
    """:class:`InvalidJob` if the job's requested_at is further in the future than the
    clock skew allows (``CARDS_MAX_CLOCK_SKEW_SECONDS``) or older than the job age limit."""
    if job.requested_at is None:
        return
    settings = get_settings()
    try:
        check_requested_at(
            job.requested_at,
            now or datetime.now(UTC),
            max_age_seconds=settings.max_job_age_seconds,
            max_skew_seconds=settings.max_clock_skew_seconds,
        )
    except ValueError as exc:
        raise InvalidJob([str(exc)], ["requested_at"]) from None


def enqueue(job: Job, app: Celery | None = None) -> str:
    """Send a validated job of any kind under its task name; its job id (the Celery task id).

    Raises :class:`InvalidJob` (nothing is sent) if its requested_at or its
    callback_url is refused. Task events (Flower) show the job id, not the fields.
    """
    check_request_time(job)
    job = job.stamped()
    job_id = job.job_id
    assert job_id is not None  # stamped() always sets it
    if isinstance(job, SetDefaultCardJob):
        check_callback_url(job)
    send_job(job, app or producer_app())
    return job_id


def send_job(job: Job, app: Celery, producer: kombu.Producer | None = None, **options: Any) -> None:
    """Send a stamped, checked job under its task name (Celery's ``send_task``), on
    ``producer`` with Celery's publish ``options`` if given: the one place a job
    becomes a task message."""
    job_id = job.job_id
    assert job_id is not None  # stamped
    app.send_task(
        kind_of(job).task_name,
        kwargs=job.to_task_kwargs(),
        task_id=job_id,
        queue=get_settings().queue,
        producer=producer,
        **event_reprs(job_id),
        **options,
    )


def enqueue_set_default_card(
    user_id: str,
    default_source: str,
    *,
    job_id: str | None = None,
    requested_at: datetime | str | None = None,
    stripe_account: str | None = None,
    callback_url: str | None = None,
    app: Celery | None = None,
) -> str:
    """Validate and enqueue one job; its job id.

    Raises :class:`InvalidJob` (nothing is enqueued) when a field is wrong.
    """
    job = build_job(
        user_id,
        default_source,
        job_id=job_id,
        requested_at=requested_at,
        stripe_account=stripe_account,
        callback_url=callback_url,
    )
    return enqueue(job, app)


def _fields(user_id: str, job_id: str | None, stripe_account: str | None) -> dict[str, str]:
    fields = {"userId": user_id, "job_id": job_id, "stripe_account": stripe_account}
    return {k: v for k, v in fields.items() if v is not None}


def enqueue_assign_card(
    user_id: str,
    source: str,
    *,
    job_id: str | None = None,
    stripe_account: str | None = None,
    app: Celery | None = None,
) -> str:
    """Attach the card behind ``source`` (``tok_…`` or ``src_…``) to the customer; the job id.

    Raises :class:`InvalidJob` (nothing is enqueued) when a field is wrong.
    """
    job = validate_assign_job({**_fields(user_id, job_id, stripe_account), "source": source})
    return enqueue(job, app)


def enqueue_list_cards(
    user_id: str,
    *,
    job_id: str | None = None,
    stripe_account: str | None = None,
    app: Celery | None = None,
) -> str:
    """List the customer's cards; the job id. :class:`InvalidJob` if wrong."""
    return enqueue(validate_list_job(_fields(user_id, job_id, stripe_account)), app)


def _stop_waiting(result: AsyncResult[Any]) -> None:
    """Unsubscribe from the result's channel now, while the process can still talk to Redis.

    Otherwise ``AsyncResult.__del__`` does it at interpreter exit, where redis-py
    can no longer import what a reconnect needs and prints a traceback.
    """
    remove = getattr(result.backend, "remove_pending_result", None)
    if remove is not None:
        remove(result)


def get_result(job_id: str, timeout: float | None = 30.0, *, app: Celery | None = None) -> Envelope:
    """The job's envelope, waiting up to ``timeout`` seconds (0: do not wait).

    Raises :class:`ResultNotReady` if there is none yet.
    """
    result: AsyncResult[Any] = AsyncResult(job_id, app=app or producer_app())
    if timeout is not None and timeout <= 0:
        if not result.ready():
            raise _not_ready(job_id, result)
    else:
        try:
            result.get(timeout=timeout, propagate=False, disable_sync_subtasks=False)
        except CeleryTimeoutError:
            raise _not_ready(job_id, result) from None
        finally:
            _stop_waiting(result)
    return envelope_of(job_id, result.state, result.result)


def envelope_of(job_id: str, state: str, value: object) -> Envelope:
    """The envelope of a finished job from its Celery state and result value. Pure."""
    if state == states.SUCCESS and isinstance(value, dict) and "status" in value:
        return cast(Envelope, value)
    # The worker ends every job with an envelope; anything else is a crash that
    # escaped it, reported in the same shape without its traceback.
    return failure(f"job {job_id} ended abnormally (state {state})", ErrorKind.INTERNAL)

"""The job pipeline: a job kind's Stripe attempt inside an ordered list of steps.

One delivery of a job is validated by its kind's contract, then passes every
step's ``before_attempt`` in list order, the kind's attempt, and the
``after_attempt`` hooks in reverse order. A step answers early by returning an
outcome from ``before_attempt``: the attempt and the later steps are skipped,
and only the steps already entered (itself included) see ``after_attempt``.
A final answer, never a retry, then goes to every step's ``after_job``.
Steps are shared by a process's threads: per-job state lives on the
:class:`JobCall`. Every delivery ends in an envelope or :class:`RetryLater`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from cards.envelope import ErrorKind, failure
from cards.jobs import InvalidJob, check_requested_at
from worker.errors import StripeCallError
from worker.jobstate import AttemptState

__all__ = [
    "Answer",
    "Attempted",
    "Delivery",
    "Job",
    "JobCall",
    "JobKind",
    "Outcome",
    "Pipeline",
    "RetryLater",
    "Step",
]

logger = logging.getLogger(__name__)

#: A job's final answer: an envelope (``list_cards`` answers a list of cards in its data).
Answer = Mapping[str, Any]


@dataclass(frozen=True)
class RetryLater:
    """Run the job again in ``countdown`` seconds; ``cause`` says why, for the log."""

    countdown: int
    reason: str
    cause: str = ""


#: What one delivery of a job ends with.
Outcome = Answer | RetryLater
#: What a step's ``after_attempt`` may see: the attempt's Stripe failure, until the
#: retries step (the innermost) turns it into an outcome.
Attempted = Outcome | StripeCallError


@dataclass(frozen=True)
class Delivery:
    """This delivery of a job: its first (never retried), the queue it came from, and
    how many deliveries it has had (1 for the first)."""

    first: bool
    queue: str
    number: int = 1


class Job(Protocol):
    """What every job kind's validated job has."""

    @property
    def job_id(self) -> str | None: ...

    @property
    def requested_at(self) -> datetime | None: ...

    @property
    def userId(self) -> str: ...

    @property
    def stripe_account(self) -> str | None: ...


class JobKind(Protocol):
    """A job kind: its contract (task name, validation) and its Stripe attempt."""

    @property
    def task_name(self) -> str: ...

    def validate(self, fields: object) -> Any: ...

    def attempt(self, job: Any, job_id: str, generation: int) -> Answer:
        """Call Stripe once under key ``generation``, raising the classified errors of
        :mod:`worker.errors`; the job's answer."""
        ...


@dataclass
class JobCall:
    """One delivery of one job as it passes the steps."""

    task: str
    job_id: str
    delivery: Delivery
    started: float = field(default_factory=time.monotonic)
    #: The validated job; None if it failed validation (its fields can't be trusted).
    job: Any = None
    #: The retries step's record of this job, once it has read or begun one.
    attempt_state: AttemptState | None = None
    #: The key generation this attempt writes under.
    generation: int = 0
    #: The attempt's classified Stripe failure, if it failed.
    error: StripeCallError | None = None
    #: The customer-order step's hold: (customer key, lock token, requested_at).
    customer_hold: tuple[str, str, float] | None = None


class Step:
    """A cross-cutting concern of every job; each hook does nothing by default."""

    def before_attempt(self, call: JobCall) -> Outcome | None:
        """Before the attempt: None to go on, or the job's outcome (no attempt is made)."""
        return None

    def after_attempt(self, call: JobCall, outcome: Attempted) -> Attempted:
        """After the attempt (or an earlier answer): the outcome, possibly replaced."""
        return outcome

    def after_job(self, call: JobCall, answer: Answer) -> None:
        """Once the job has its final answer (never after a retry)."""


StepT = TypeVar("StepT", bound=Step)


def _from_the_future(job: Job, max_skew_seconds: float) -> InvalidJob | None:
    """Refuse a requested_at beyond the clock skew: as the newest request, it would
    supersede every later request for its customer. (Too old is the order step's.)"""
    if job.requested_at is None:
        return None
    try:
        check_requested_at(
            job.requested_at,
            datetime.now(UTC),
            max_age_seconds=float("inf"),
            max_skew_seconds=max_skew_seconds,
        )
    except ValueError as exc:
        return InvalidJob([str(exc)], ["requested_at"])
    return None


POSITIONAL_ARGS = "send the fields as keyword arguments (kwargs), not positional args"


class Pipeline:
    """A job kind and its steps, outermost first."""

    def __init__(
        self,
        kind: JobKind,
        steps: Sequence[Step],
        *,
        max_skew_seconds: float = float("inf"),
    ) -> None:
        self.kind = kind
        self.steps = tuple(steps)
        self.max_skew_seconds = max_skew_seconds

    def step(self, kind: type[StepT]) -> StepT | None:
        """This pipeline's step of type ``kind``, if it has one."""
        for step in self.steps:
            if isinstance(step, kind):
                return step
        return None

    def replacing(self, old: type[Step], new: Step) -> Pipeline:
        """This pipeline with ``new`` in place of its step of type ``old``."""
        steps = [new if isinstance(step, old) else step for step in self.steps]
        return Pipeline(self.kind, steps, max_skew_seconds=self.max_skew_seconds)

    def run(
        self, job_id: str, delivery: Delivery, fields: object, args: Sequence[Any] = ()
    ) -> Outcome:
        """One delivery of a job with ``fields`` (``args``: positional arguments, refused).
        ``job_id`` is the message's; a job's own ``job_id`` field wins over it."""
        call = JobCall(self.kind.task_name, job_id, delivery)
        try:
            job = self._validated(fields, args)
        except InvalidJob as exc:
            answer = failure(
                str(exc), ErrorKind.INVALID_JOB, param=exc.fields[0] if exc.fields else None
            )
            self._finish(call, answer)
            return answer
        call.job, call.job_id = job, job.job_id or job_id
        try:
            outcome = self._through_steps(call)
        except Exception:
            # A bug, not a Stripe answer: report it once instead of retrying blindly.
            logger.exception("job %s: unexpected error", call.job_id)
            outcome = failure(
                f"internal error in the worker; job {call.job_id} was not completed",
                ErrorKind.INTERNAL,
            )
        if not isinstance(outcome, RetryLater):
            self._finish(call, outcome)
        return outcome

    def _validated(self, fields: object, args: Sequence[Any]) -> Any:
        if args:
            raise InvalidJob([POSITIONAL_ARGS], [])
        job = self.kind.validate(fields)
        refused = _from_the_future(job, self.max_skew_seconds)
        if refused is not None:
            raise refused
        return job

    def _through_steps(self, call: JobCall) -> Outcome:
        entered: list[Step] = []
        result: Attempted | None = None
        for step in self.steps:
            entered.append(step)
            result = step.before_attempt(call)
            if result is not None:
                break
        if result is None:
            try:
                result = self.kind.attempt(call.job, call.job_id, call.generation)
            except StripeCallError as exc:
                call.error = result = exc
        for step in reversed(entered):
            result = step.after_attempt(call, result)
        if isinstance(result, StripeCallError):
            raise result  # no step classified it: a pipeline without its retries step
        return result

    def _finish(self, call: JobCall, answer: Answer) -> None:
        for step in reversed(self.steps):
            step.after_job(call, answer)

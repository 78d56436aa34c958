"""Malformed task messages are refused before Celery parses them.

A message that is not a well-formed protocol-2 message (an ``id`` header, an
``[args, kwargs, embed]`` body) would otherwise stop the whole worker with
"Unrecoverable error". :func:`guarded` wraps Celery's default strategy, checks
each message with the pure :func:`message_problem`, and refuses a bad one as
an invalid task after storing a ``status: false`` envelope under its task id,
so its sender gets an answer. Details: docs/worker.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from celery import Task, states
from celery.exceptions import InvalidTaskError
from celery.worker import strategy

from cards.envelope import ErrorKind, failure
from cards.jobs import check_job_id

__all__ = ["GuardedTask", "guarded", "message_problem"]

logger = logging.getLogger(__name__)


def message_problem(headers: Mapping[str, Any], payload: object) -> str | None:
    """What makes a task message unusable, or None. (Pure.)

    Celery itself assumes a well-formed ``[args, kwargs, embed]`` body and an
    ``id`` header; a message without them raises inside the worker's main
    process and stops the whole worker ("Unrecoverable error").
    """
    task_id = headers.get("id")
    if not isinstance(task_id, str) or not task_id:
        return "the message has no task id"
    if not isinstance(payload, list | tuple) or len(payload) != 3:
        return "the message body must be [args, kwargs, embed]"
    args, kwargs, embed = payload
    if not isinstance(args, list | tuple):
        return "args must be a JSON array"
    if not isinstance(kwargs, dict):
        return "kwargs must be a JSON object of named fields"
    if not all(isinstance(key, str) for key in kwargs):
        return "kwargs must have string keys"
    if "self" in kwargs:
        # Tasks are bound: Celery would fail the call before the job is validated.
        return "kwargs must not name a field 'self'"
    if embed is not None and not isinstance(embed, dict):
        return "the message's options (embed) must be a JSON object"
    return None


def _answer_refused(app: Any, task_id: object, problem: str) -> None:
    """Store a failure envelope for a refused message, so its sender gets an answer."""
    if app is None or not isinstance(task_id, str):
        return
    try:
        check_job_id(task_id)
        envelope = failure(f"invalid job: {problem}", ErrorKind.INVALID_JOB)
        app.backend.store_result(task_id, envelope, states.SUCCESS)
    except Exception:  # a refused message must never take the consumer down
        logger.warning("could not store the refusal of a malformed message")


def guarded(task: Task[Any, Any], app: Any, consumer: Any, **options: Any) -> Callable[..., Any]:
    """Celery's default strategy, behind :func:`message_problem`."""
    handle = strategy.default(task, app, consumer, **options)

    def handle_guarded(message: Any, body: Any, *args: Any, **kwargs: Any) -> Any:
        headers = message.headers or {}
        problem = message_problem(headers, message.payload if body is None else body)
        if problem is not None:
            _answer_refused(app, headers.get("id"), problem)
            raise InvalidTaskError(problem)
        try:
            return handle(message, body, *args, **kwargs)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            # A shape this check did not foresee must not stop the worker either.
            # (Connection errors are not caught: Celery recovers from those itself.)
            raise InvalidTaskError(f"unusable task message ({type(exc).__name__})") from None

    return handle_guarded


class GuardedTask(Task):  # type: ignore[type-arg]
    """The base of this worker's tasks: every message goes through :func:`guarded`."""

    Strategy = "worker.malformed:guarded"

"""The ``cards`` CLI's exit codes, and the one place that turns expected failures into them.

Every command (``cards …`` and its sub-apps) runs its work through
:func:`guarded`, so each error is one line on stderr, never a traceback, with
the same code everywhere: 0 done; 1 a job ended with ``status: false`` (a
migration: a row was invalid or failed); 2 bad input; 3 no result yet; 4 the
broker or result backend cannot be reached; 130 interrupted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, NoReturn, TypeVar

import kombu.exceptions
import redis
import typer
from celery.exceptions import BackendError
from kombu.utils.url import maybe_sanitize_url

from cards.jobs import InvalidJob
from cards.settings import get_settings
from producers.client import ResultNotReady, Unreachable, check_connections

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_READY",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "fail",
    "guarded",
]

T = TypeVar("T")

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_BAD_INPUT: Final = 2
EXIT_NOT_READY: Final = 3
EXIT_UNREACHABLE: Final = 4
EXIT_INTERRUPTED: Final = 130


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def guarded(action: Callable[[], T], *, connects: bool = True) -> T:
    """Run ``action``, turning the expected failures into one line and an exit code."""
    try:
        if connects:
            check_connections()
        return action()
    except InvalidJob as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    except ResultNotReady as exc:
        fail(
            f"{exc}; wait with --wait SECONDS, and check that a worker reads queue "
            f"{get_settings().queue}",
            EXIT_NOT_READY,
        )
    except (
        Unreachable,
        kombu.exceptions.OperationalError,
        redis.RedisError,
        OSError,
        BackendError,
    ) as exc:
        settings = get_settings()
        where = maybe_sanitize_url(settings.celery_broker_url)
        backend = settings.celery_result_backend
        if backend and backend != settings.celery_broker_url:
            where += f" or {maybe_sanitize_url(backend)}"
        fail(
            f"cannot reach the broker or result backend at {where} ({exc}); are they running "
            "there? (CELERY_BROKER_URL, CELERY_RESULT_BACKEND)",
            EXIT_UNREACHABLE,
        )

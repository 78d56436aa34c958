"""The ``cards`` command line.

Exit codes: 0 done; 1 the job ended with ``status: false``; 2 bad input;
3 no result yet; 4 the broker or result backend cannot be reached.
Every error is one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Annotated, NoReturn, TypeVar

import kombu.exceptions
import pydantic
import redis
import typer
from kombu.utils.url import maybe_sanitize_url

from cards.envelope import Envelope
from cards.jobs import InvalidJob
from cards.settings import get_settings
from producers.jobs import (
    ResultNotReady,
    Unreachable,
    build_job,
    check_connections,
    enqueue_job,
    get_result,
)

__all__ = ["cli", "main"]

T = TypeVar("T")

EXIT_JOB_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_READY = 3
EXIT_UNREACHABLE = 4

cli = typer.Typer(
    name="cards",
    help="Enqueue and inspect set_default_card jobs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _print_envelope(envelope: Envelope) -> None:
    typer.echo(json.dumps(envelope, ensure_ascii=False, indent=2))
    if not envelope["status"]:
        raise typer.Exit(EXIT_JOB_FAILED)


def _guarded(action: Callable[[], T], *, connects: bool = True) -> T:
    """Run ``action``, turning the expected failures into one line and an exit code."""
    try:
        if connects:
            check_connections()
        return action()
    except InvalidJob as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    except ResultNotReady as exc:
        _fail(str(exc), EXIT_NOT_READY)
    except (Unreachable, kombu.exceptions.OperationalError, redis.RedisError, OSError) as exc:
        where = maybe_sanitize_url(get_settings().celery_broker_url)
        _fail(f"cannot reach the broker or result backend at {where} ({exc})", EXIT_UNREACHABLE)


@cli.command()
def enqueue(
    user_id: Annotated[str, typer.Option("--user-id", help="Stripe customer id (cus_…).")],
    source: Annotated[str, typer.Option("--source", help="card_…, src_… or pm_… to make default.")],
    job_id: Annotated[str | None, typer.Option(help="Job id; a UUID if omitted.")] = None,
    stripe_account: Annotated[
        str | None, typer.Option(help="Connected account (acct_…), sent as Stripe-Account.")
    ] = None,
    callback_url: Annotated[str | None, typer.Option(help="URL to POST the result to.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait and print the envelope.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 30.0,
) -> None:
    """Enqueue one job; print its id (or, with --wait, its envelope as JSON)."""
    job = _guarded(
        lambda: build_job(
            user_id,
            source,
            job_id=job_id,
            stripe_account=stripe_account,
            callback_url=callback_url,
        ),
        connects=False,
    )
    new_id = _guarded(lambda: enqueue_job(job))
    if not wait:
        typer.echo(new_id)
        return
    _print_envelope(_guarded(lambda: get_result(new_id, timeout=timeout)))


@cli.command()
def result(
    job_id: Annotated[str, typer.Argument(help="The job id printed by `cards enqueue`.")],
    wait: Annotated[float, typer.Option(help="Seconds to wait for the result (0: don't).")] = 0.0,
) -> None:
    """Print a job's envelope as JSON."""
    _print_envelope(_guarded(lambda: get_result(job_id, timeout=wait)))


def main() -> None:
    try:
        get_settings()
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        typer.echo(f"error: invalid settings: {problems}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)

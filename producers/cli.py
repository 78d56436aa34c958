"""The ``cards`` command line; ``cards migrate`` is the sub-app :mod:`producers.migrate.cli`.

Exit codes: 0 done; 1 the job ended with ``status: false`` (``migrate``: a
row was invalid or failed); 2 bad input;
3 no result yet; 4 the broker or result backend cannot be reached.
Every error is one line on stderr, never a traceback (:mod:`producers.cli_errors`).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
from collections.abc import Mapping
from typing import Annotated, Any

import pydantic
import typer

from cards.envelope import Envelope
from cards.jobs import check_job_id
from cards.settings import get_settings
from cards.tracing import TracingUnavailable, enable_tracing
from producers.callbacks import get_callback_status
from producers.cli_errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, fail, guarded
from producers.client import build_job, get_result
from producers.client import enqueue as enqueue_job
from producers.deadletters import dead_letter_store, replay_dead_letters
from producers.migrate.cli import app as migrate_app

__all__ = ["cli", "main"]

#: Flower's task list shows the result ({status, message}) and a failure's "<kind>: <message>".
FLOWER_TASK_COLUMNS = "name,uuid,state,kwargs,result,exception,received,runtime,worker"

cli = typer.Typer(
    name="cards",
    help="Enqueue and inspect set_default_card jobs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(asked: bool) -> None:
    if asked:
        try:
            version = importlib.metadata.version("cards-worker")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown (not installed)"
        typer.echo(f"cards {version}")
        raise typer.Exit()


@cli.callback()
def _options(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version; exit."
        ),
    ] = False,
) -> None:
    # The gateway traces as a gateway, Flower not at all: the producer's commands do here.
    if ctx.invoked_subcommand in ("gateway", "flower"):
        return
    try:
        enable_tracing("cards-producer")
    except TracingUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _print_envelope(envelope: Envelope | Mapping[str, Any]) -> None:
    typer.echo(json.dumps(envelope, ensure_ascii=False, indent=2))
    if not envelope["status"]:
        raise typer.Exit(EXIT_FAILED)


#: The dead letters a ``cards dlq`` command acts on.
JobIds = Annotated[list[str] | None, typer.Argument(help="Job ids; all if omitted.")]


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
    job = guarded(
        lambda: build_job(
            user_id,
            source,
            job_id=job_id,
            stripe_account=stripe_account,
            callback_url=callback_url,
        ),
        connects=False,
    )
    new_id = guarded(lambda: enqueue_job(job))
    if not wait:
        typer.echo(new_id)
        return
    _print_envelope(guarded(lambda: get_result(new_id, timeout=timeout)))


@cli.command()
def result(
    job_id: Annotated[str, typer.Argument(help="The job id printed by `cards enqueue`.")],
    wait: Annotated[float, typer.Option(help="Seconds to wait for the result (0: don't).")] = 0.0,
) -> None:
    """Print a job's envelope as JSON, with "callback": its delivery, if it asked for one."""
    try:
        check_job_id(job_id, "JOB_ID")
    except ValueError as exc:
        fail(f"{exc}; pass the id that `cards enqueue` printed", EXIT_BAD_INPUT)

    def envelope_and_callback() -> dict[str, Any]:
        view: dict[str, Any] = dict(get_result(job_id, timeout=wait))
        callback = get_callback_status(job_id)
        if callback is not None:
            view["callback"] = callback  # this view only; never stored in the envelope
        return view

    _print_envelope(guarded(envelope_and_callback))


@cli.command()
def flower(
    port: Annotated[int, typer.Option(help="Port Flower listens on.")] = 5555,
    address: Annotated[str, typer.Option(help="Address Flower listens on.")] = "127.0.0.1",
    insecure_no_auth: Annotated[
        bool,
        typer.Option(
            "--insecure-no-auth",
            help="Start without basic auth when CARDS_FLOWER_BASIC_AUTH is unset (never expose).",
        ),
    ] = False,
) -> None:
    """Run Flower on this broker (`celery -A worker flower`) behind basic auth."""
    auth = get_settings().flower_basic_auth
    weak = get_settings().flower_password_problem
    if weak is not None:
        fail(weak, EXIT_BAD_INPUT)
    env = dict(os.environ)
    if auth is not None:
        # Through the environment, so the password is not on a command line `ps` shows.
        env["FLOWER_BASIC_AUTH"] = auth.get_secret_value()
    elif not insecure_no_auth:
        fail(
            "CARDS_FLOWER_BASIC_AUTH (user:password) is not set; Flower shows every job, so it "
            "does not start without auth (use --insecure-no-auth to override)",
            EXIT_BAD_INPUT,
        )
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker",
        "flower",
        f"--port={port}",
        f"--address={address}",
        f"--tasks_columns={FLOWER_TASK_COLUMNS}",
    ]
    sys.stdout.flush()
    os.execve(sys.executable, argv, env)  # noqa: S606 - a fixed argv, no shell


@cli.command()
def gateway(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(help="Processes sharing the port; default: one per core.", min=1),
    ] = None,
    dev_no_auth: Annotated[
        bool,
        typer.Option(
            "--dev-no-auth",
            help="Serve without API keys (development only; a loopback --host only).",
        ),
    ] = False,
) -> None:
    """Serve the HTTP API (POST /api/cards/default, …) until interrupted."""
    from producers.http.app import GatewayConfigError, serve  # FastAPI only for this command

    try:
        serve(host, port, workers=workers, dev_no_auth=dev_no_auth)
    except GatewayConfigError as exc:
        fail(str(exc), EXIT_BAD_INPUT)


dlq = typer.Typer(
    help="Jobs whose transient failures outlasted their retries.", no_args_is_help=True
)
cli.add_typer(dlq, name="dlq")


@dlq.command("list")
def dlq_list(
    limit: Annotated[int | None, typer.Option(help="Show at most this many.")] = None,
) -> None:
    """Print dead letters, oldest first, one JSON object per line."""
    for letter in guarded(lambda: dead_letter_store().oldest(limit), connects=False):
        typer.echo(
            json.dumps(
                {
                    "job_id": letter.job_id,
                    "userId": letter.job.get("userId"),
                    "default_source": letter.job.get("default_source"),
                    "failed_at": letter.failed_at,
                    "message": letter.envelope["message"],
                },
                ensure_ascii=False,
            )
        )


@dlq.command("replay")
def dlq_replay(job_ids: JobIds = None) -> None:
    """Enqueue dead letters again under their own job ids (no write is doubled)."""
    store = dead_letter_store()

    def replay() -> list[str]:
        letters = store.get(job_ids) if job_ids else store.oldest()
        missing = sorted(set(job_ids or ()) - {letter.job_id for letter in letters})
        if missing:
            fail(f"not in the dead-letter store: {', '.join(missing)}", EXIT_BAD_INPUT)
        return replay_dead_letters(letters, store=store)

    replayed = guarded(replay)
    typer.echo(f"replayed {len(replayed)} job(s)")
    for job_id in replayed:
        typer.echo(job_id)


@dlq.command("purge")
def dlq_purge(job_ids: JobIds = None) -> None:
    """Delete dead letters without replaying them."""
    store = dead_letter_store()
    removed = guarded(lambda: store.remove(job_ids) if job_ids else store.purge(), connects=False)
    typer.echo(f"purged {removed} job(s)")


cli.add_typer(migrate_app, name="migrate")


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
        sys.exit(EXIT_INTERRUPTED)

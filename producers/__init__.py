"""Producers of jobs (``set_default_card`` and its companions): a Python API and the ``cards`` CLI.

Upstream services import::

    from producers import enqueue_set_default_card, get_result

    job_id = enqueue_set_default_card("cus_…", "card_…")
    envelope = get_result(job_id, timeout=30)

Modules:
    client: enqueue any kind of job (one ``enqueue``), read results, check connections.
    callbacks: verify a callback's signature; read how its delivery went.
    deadletters: list, replay and purge dead letters.
    queues: who reads a queue, and how deep it is.
    cli: the ``cards`` command (Typer).
    cli_errors: the CLI's exit codes and its one way to report a failure.
    http: the HTTP gateway (``cards gateway``), a package.
    migrate: ``cards migrate``, migrations from a file, a package.
"""

from producers.callbacks import CallbackVerificationError, get_callback_status, verify_callback
from producers.client import (
    InvalidJob,
    ResultNotReady,
    enqueue_assign_card,
    enqueue_list_cards,
    enqueue_set_default_card,
    get_result,
)

__all__ = [
    "CallbackVerificationError",
    "InvalidJob",
    "ResultNotReady",
    "enqueue_assign_card",
    "enqueue_list_cards",
    "enqueue_set_default_card",
    "get_callback_status",
    "get_result",
    "verify_callback",
]

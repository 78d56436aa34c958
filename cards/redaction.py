"""What task events, and so Flower and the worker's log, may show about a job.

Celery's task events carry a repr of a task's arguments and return value: here a
job's fields and its envelope, whose ``data`` holds the customer's email, name and
phone. So events carry the job id instead of the arguments and ``{status, message}``
instead of the envelope; a bulk batch's events name its migration and row count. A
job that ends ``status: false`` sends ``task-failed``, so Flower counts it as FAILURE;
the result backend keeps the whole envelope, in state SUCCESS. Which event carries
what, and who redacts it: ``docs/internals.md``.
"""

from __future__ import annotations

import ast
import re
from typing import Any, Final

__all__ = [
    "HIDDEN",
    "NEVER_STORED",
    "batch_reprs",
    "calls_for_a_probe",
    "event_reprs",
    "finished_event",
    "minimal_customer",
    "redact_customer",
    "redact_source",
    "summarize_envelope_repr",
    "without_secrets",
]

#: What an event shows for a value it may not show.
HIDDEN: Final = "'<hidden>'"

#: The head of an envelope's repr: ``{'status': True, 'message': '…'`` (the
#: envelope functions build the dict in that order).
_QUOTED = r"'(?:[^'\\]|\\.)*'" + "|" + r'"(?:[^"\\]|\\.)*"'
_ENVELOPE_HEAD = re.compile(
    r"\{'status': (?P<status>True|False), 'message': (?P<message>" + _QUOTED + ")"
    r"(?:, 'data': \{'kind': '(?P<kind>[a-z_]+)')?"
)


def event_reprs(job_id: str) -> dict[str, Any]:
    """``argsrepr``/``kwargsrepr`` options for ``apply_async``/``send_task``: the job id only."""
    return {"argsrepr": "()", "kwargsrepr": repr({"job_id": job_id})}


def batch_reprs(job_id: str, migration_id: str, rows: int) -> dict[str, Any]:
    """``argsrepr``/``kwargsrepr`` of a bulk batch: its migration and row count, no row."""
    return {
        "argsrepr": "()",
        "kwargsrepr": repr({"job_id": job_id, "migration_id": migration_id, "rows": rows}),
    }


def _envelope_head(result: Any) -> tuple[bool, str, str | None] | None:
    """``(status, message, failure kind)`` of an envelope or its repr's head; None if neither."""
    if isinstance(result, dict):
        status, message, data = result.get("status"), result.get("message"), result.get("data")
        if not (isinstance(status, bool) and isinstance(message, str)):
            return None
        kind = data.get("kind") if isinstance(data, dict) else None
        return status, message, kind if isinstance(kind, str) else None
    if not isinstance(result, str):
        return None
    match = _ENVELOPE_HEAD.match(result)
    if match is None:
        return None
    try:
        message = ast.literal_eval(match["message"])
    except (ValueError, SyntaxError):
        return None
    return match["status"] == "True", message, match["kind"]


def summarize_envelope_repr(result: Any) -> str:
    """The repr of ``{status, message}`` from an envelope or its repr; :data:`HIDDEN` otherwise.

    The worker's pool process hands the main process only a (possibly
    truncated) repr of the return value, so this reads the repr's head and
    never passes on anything after the message (and the failure's kind).
    """
    head = _envelope_head(result)
    if head is None:
        return HIDDEN
    return repr({"status": head[0], "message": head[1]})


def calls_for_a_probe(event: str, fields: dict[str, Any]) -> bool:
    """Does this event (after :func:`finished_event`) hint that the worker cannot reach or
    use Stripe: a job ended ``misconfigured``, or retries for want of a connection? (Pure.)"""
    exception = str(fields.get("exception") or "")
    if event == "task-failed":
        return exception.startswith("misconfigured: ")
    return event == "task-retried" and "connection: " in exception


def finished_event(fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The event a finished job sends instead of its ``task-succeeded``. (Pure.)

    The result shows ``{status, message}``. An envelope with ``status: false``
    becomes ``task-failed`` (Flower's FAILURE, its "Failed" filter), with
    ``exception`` ``"<kind>: <message>"``; the result backend still holds the
    envelope in state SUCCESS, so every consumer reads the same shape.
    """
    head = _envelope_head(fields.get("result"))
    if head is None:
        return "task-succeeded", {**fields, "result": HIDDEN}
    status, message, kind = head
    shown = {**fields, "result": repr({"status": status, "message": message})}
    if status:
        return "task-succeeded", shown
    return "task-failed", {**shown, "exception": f"{kind or 'failed'}: {message}"}


#: Keys never kept in an envelope, whatever the mode: a source's ``client_secret``
#: lets whoever holds it act on the source from a browser.
NEVER_STORED: Final = frozenset({"client_secret"})

#: With CARDS_MINIMAL_DATA, a success envelope keeps only these customer fields...
MINIMAL_CUSTOMER_FIELDS: Final = ("id", "object", "default_source", "invoice_settings")
#: ...and these of each card or source in its list (no cardholder name or address).
MINIMAL_SOURCE_FIELDS: Final = (
    "id",
    "object",
    "type",
    "brand",
    "last4",
    "exp_month",
    "exp_year",
    "funding",
    "customer",
)


def minimal_customer(customer: dict[str, Any]) -> dict[str, Any]:
    """The customer without personal data: id, defaults and the card list. (Pure.)"""
    kept: dict[str, Any] = {k: customer[k] for k in MINIMAL_CUSTOMER_FIELDS if k in customer}
    sources = customer.get("sources")
    if isinstance(sources, dict):
        cards = [
            redact_source(item, minimal=True)
            for item in sources.get("data") or []
            if isinstance(item, dict)
        ]
        kept["sources"] = {"object": "list", "data": cards}
    return kept


def without_secrets(value: Any) -> Any:
    """``value`` (a Stripe object, list or scalar) without any :data:`NEVER_STORED` key,
    at any depth. (Pure.)"""
    if isinstance(value, dict):
        return {k: without_secrets(v) for k, v in value.items() if k not in NEVER_STORED}
    if isinstance(value, list):
        return [without_secrets(item) for item in value]
    return value


def redact_customer(customer: dict[str, Any], minimal: bool) -> dict[str, Any]:
    """The customer as a success envelope keeps it: minimal or whole, never a secret."""
    return minimal_customer(customer) if minimal else without_secrets(customer)


def redact_source(item: dict[str, Any], minimal: bool) -> dict[str, Any]:
    """A card or source as an envelope keeps it (assign, list): minimal fields or all
    but the secrets. (Pure.)"""
    if minimal:
        return {k: item[k] for k in MINIMAL_SOURCE_FIELDS if k in item}
    return without_secrets(item)  # type: ignore[no-any-return]

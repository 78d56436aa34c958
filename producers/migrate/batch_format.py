"""Every guess about Stripe's Batch Jobs API (public preview), and only here.

Stripe's docs confirm the endpoints, the statuses, the 5-minute upload URL, JSONL
input and one result line per input line. Not confirmed, so isolated here: the input
line's shape (read from Stripe's beta SDK only), the upload's HTTP method, the result
line's schema and the ``output_file.download_url`` shape. If Stripe changes one of
them, this module is the one to change; a result line this module cannot read is
reported as such for its row, never guessed at. Details: docs/batch-api.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "ENDPOINT",
    "RETRYABLE_STATUSES",
    "UPLOAD_METHOD",
    "LineResult",
    "customer_update",
    "download_url",
    "input_line",
    "read_result",
    "upload_url",
]

#: The customer update, as the create call names it (confirmed).
ENDPOINT: Final = {"path": "/v1/customers/:customer", "http_method": "POST"}
#: Guess: presigned URLs are usually written with PUT of the whole body.
UPLOAD_METHOD: Final = "PUT"
#: One encoder for every line (json.dumps would build one a call).
_ENCODE: Final = json.JSONEncoder(separators=(",", ":")).encode
#: Result statuses worth another try through the per-row engine.
RETRYABLE_STATUSES: Final = frozenset({409, 429, 500, 502, 503, 504})


def input_line(
    line_id: str, customer: str, default_source: str, account: str | None, stripe_version: str
) -> bytes:
    """One JSONL line (SDK shape: ``id``, ``path_params``, ``params``, ``stripe_version``,
    ``context`` for a connected account), newline included. (Pure.)"""
    line = {
        "id": line_id,
        "path_params": {"customer": customer},
        "params": customer_update(default_source),
        "stripe_version": stripe_version,
        "context": account,
    }
    return _ENCODE(line).encode() + b"\n"


def customer_update(default_source: str) -> dict[str, Any]:
    """The customer update's params, as JSON: a ``pm_`` id is the invoices' default
    payment method, anything else the default source (as the worker's call). (Pure.)"""
    if default_source.startswith("pm_"):
        return {"invoice_settings": {"default_payment_method": default_source}}
    return {"default_source": default_source}


@dataclass(frozen=True, slots=True)
class LineResult:
    """What one result line says of its input line."""

    line_id: str | None
    status: int | None
    #: Stripe's message for a failed line; None when it succeeded.
    message: str | None
    #: Stripe's error code for a failed line (``resource_missing``, …), when it gives one.
    code: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE_STATUSES


def read_result(raw: bytes | str) -> LineResult:
    """A result line (guess: ``{"id", "status", "response"}``); an unreadable one is a
    failure with no id and a message saying so. (Pure.)"""
    try:
        line = json.loads(raw)
        line_id, status = line.get("id"), line.get("status")
        if not isinstance(status, int) or isinstance(status, bool):
            raise TypeError
    except (ValueError, TypeError, AttributeError):
        return LineResult(None, None, "unreadable result line from Stripe")
    if 200 <= status < 300:
        return LineResult(str(line_id), status, None)
    message, code = _error(line.get("response"))
    return LineResult(str(line_id), status, message, code)


def _error(response: Any) -> tuple[str, str | None]:
    error = response.get("error") if isinstance(response, Mapping) else None
    if not isinstance(error, Mapping):
        return "Stripe gave no message", None
    message, code = error.get("message"), error.get("code")
    return (str(message) if message else "Stripe gave no message"), (
        str(code) if isinstance(code, str) and code else None
    )


def upload_url(job: Mapping[str, Any]) -> str:
    """The upload URL of a ``ready_for_upload`` job (confirmed: ``upload_url.url``)."""
    return str(job["upload_url"]["url"])


def download_url(job: Mapping[str, Any]) -> str:
    """The output file's URL (guess: ``output_file.download_url.url``, or a plain string)."""
    url = job["output_file"]["download_url"]
    return str(url["url"] if isinstance(url, Mapping) else url)

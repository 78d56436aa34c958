"""A customer's ordering keys in Redis, shared by the worker and the batch engine.

``cards:customer-lock:<account>:<customer>`` is the one-writer lock (a token);
``cards:customer-newest:<account>:<customer>`` is the newest request applied to the
customer, a hash of ``requested_at`` (epoch seconds), ``job_id``, ``source`` (the
card it set) and ``applied_at`` (Redis time when it was recorded). The worker writes
both (:mod:`worker.ordering`); a batch-api migration reads them, and records its rows,
after Stripe ran its batch job (:mod:`producers.migrate.batch_engine`).
"""

from __future__ import annotations

from typing import Final

__all__ = ["LOCK_PREFIX", "NEWEST_PREFIX", "customer_key", "ordering_keys"]

LOCK_PREFIX: Final = "cards:customer-lock:"
NEWEST_PREFIX: Final = "cards:customer-newest:"


def customer_key(customer: str, account: str | None) -> str:
    return f"{account or '-'}:{customer}"


def ordering_keys(key: str) -> list[str]:
    """The customer's lock and newest-request record, for a :func:`customer_key`."""
    return [LOCK_PREFIX + key, NEWEST_PREFIX + key]

"""Producers of jobs (``set_default_card`` and its companions): a Python API and the ``cards`` CLI.

Upstream services import::

    from producers import enqueue_set_default_card, get_result

    job_id = enqueue_set_default_card("cus_…", "card_…")
    envelope = get_result(job_id, timeout=30)
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

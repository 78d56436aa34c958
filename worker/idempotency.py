"""Idempotency keys, derived from the job id so every attempt of a job sends the same key.

A Celery retry or a broker redelivery runs the same job again; because the key
is a function of ``job_id`` alone, Stripe sees a repeat and answers with the
saved response instead of applying the change twice.

The *generation* exists for one case: Stripe saves a 5xx under the key once the
endpoint started executing, and replays that 5xx to every repeat for 24 hours.
After such an answer the job reconciles (re-reads the customer) and, if the
change is not there, writes again under the next generation's key. See
:mod:`worker.attempts`.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ASSIGN_KEY_PREFIX", "KEY_PREFIX", "idempotency_key"]

KEY_PREFIX: Final = "cards-sdc"
#: ``cards.assign_card`` writes under its own prefix, so that a job id reused
#: for another kind of job can never replay the other job's saved answer.
ASSIGN_KEY_PREFIX: Final = "cards-assign"


def idempotency_key(job_id: str, generation: int = 0, *, prefix: str = KEY_PREFIX) -> str:
    """The Stripe ``Idempotency-Key`` for a job's write, at a key generation."""
    if generation < 0:
        raise ValueError("generation must be >= 0")
    base = f"{prefix}:{job_id}"
    return base if generation == 0 else f"{base}:g{generation}"

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

from cards.kinds import SET_DEFAULT_CARD

__all__ = ["idempotency_key"]


def idempotency_key(
    job_id: str, generation: int = 0, *, prefix: str | None = SET_DEFAULT_CARD.key_prefix
) -> str:
    """The Stripe ``Idempotency-Key`` for a job's write, at a key generation; ``prefix``
    is the job kind's (:data:`cards.kinds.KINDS`), so kinds never share a key."""
    if prefix is None:
        raise ValueError("this kind of job never writes: it has no key prefix")
    if generation < 0:
        raise ValueError("generation must be >= 0")
    base = f"{prefix}:{job_id}"
    return base if generation == 0 else f"{base}:g{generation}"

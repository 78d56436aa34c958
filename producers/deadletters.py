"""Operate the dead-letter store: list, replay and purge jobs whose retries ran out.

A replay sends the original job again under its original job id: the same
idempotency key reaches Stripe, so a write that was in fact applied is not
applied twice. The old envelope is removed from the result backend first,
because Celery never overwrites a finished result.
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery
from celery.result import AsyncResult

from cards.deadletters import DeadLetter, DeadLetterStore
from cards.jobs import validate_job
from cards.settings import get_settings
from producers.client import enqueue as enqueue_job
from producers.client import producer_app

__all__ = ["dead_letter_store", "replay_dead_letters"]


def dead_letter_store() -> DeadLetterStore:
    return DeadLetterStore.from_settings(get_settings())


def replay_dead_letters(
    letters: Sequence[DeadLetter],
    *,
    store: DeadLetterStore | None = None,
    app: Celery | None = None,
) -> list[str]:
    """Enqueue each dead letter again under its job id; the ids replayed.

    A letter leaves the store only once its job is back on the queue.
    """
    store = store or dead_letter_store()
    app = app or producer_app()
    replayed: list[str] = []
    for letter in letters:
        job = validate_job(letter.job)
        AsyncResult(letter.job_id, app=app).forget()
        enqueue_job(job.with_job_id(letter.job_id), app)
        store.remove([letter.job_id])
        replayed.append(letter.job_id)
    return replayed

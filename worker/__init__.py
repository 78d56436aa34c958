"""cards-worker's Celery worker: ``celery -A worker worker -l info``.

Modules:
    app: the Celery application.
    tasks: the ``cards.set_default_card`` task (Celery glue only).
    runner: one attempt of a job, as decisions over the edges below.
    errors: what a Stripe failure means (pure classification).
    retries: backoff and give-up policy (pure).
    idempotency: idempotency keys derived from job ids (pure).
    gateway: the Stripe edge (official SDK).
    jobstate: per-job retry state in Redis.
"""

from worker.app import app

__all__ = ["app"]

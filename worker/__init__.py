"""cards-worker's Celery worker: ``celery -A worker worker -l info``.

Modules:
    app: the Celery application.
    tasks: the ``cards.set_default_card`` task (Celery glue only).
    companion: the seed API's companion tasks, ``cards.assign_card`` and ``cards.list_cards``.
    runner: one attempt of a job, as decisions over the edges below.
    errors: what a Stripe failure means (pure classification).
    retries: backoff and give-up policy (pure).
    idempotency: idempotency keys derived from job ids (pure).
    gateway: the Stripe edge (official SDK).
    jobstate: per-job retry state in Redis.
    callbacks: the ``cards.deliver_callback`` task (signed callbacks).
    callback_policy: after one callback attempt, retry or not (pure).
    webhook: the callback HTTP edge (SSRF-safe, drawbridge).
    task_requests: request classes that keep customer data out of task events (Flower).
    pool: an explicit ``-P prefork`` honoured, an unsized prefork pool one process per core.
"""

from worker.app import app

__all__ = ["app"]

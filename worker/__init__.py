"""cards-worker's Celery worker: ``celery -A worker worker``.

Modules:
    app: the Celery application.
    tasks: the job tasks, Celery glue around each kind's pipeline.
    pipeline: a job kind's attempt inside an ordered list of steps.
    middleware: the pipeline's steps, one concern each (a package).
    attempts: the Stripe attempt of each job kind that writes or lists.
    dry_run: the ``cards.check_default_card`` kind (reads only) and its verdict.
    batches: the ``cards.set_default_cards`` bulk batch task.
    wiring: every shared object of a worker process, built once after the fork.
    process_local: objects built once per process, after the fork.
    stripe_api: the Stripe edge (official SDK).
    errors: what a Stripe failure means (pure classification).
    retry_policy: backoff and give-up policy (pure).
    idempotency: idempotency keys derived from job ids (pure).
    jobstate: per-job retry state in Redis.
    ordering: customer locks and newest-request records in Redis.
    ratelimit: the shared Stripe rate limiter in Redis.
    breaker: stop consuming while Stripe refuses the worker's key or address.
    callbacks: the ``cards.deliver_callback`` task (signed callbacks).
    callback_policy: after one callback attempt, retry or not (pure).
    webhook: the callback HTTP edge (SSRF-safe).
    malformed: refuse malformed task messages before Celery parses them.
    task_requests: request classes that keep customer data out of task events.
    events: task events published in batches, from the event loop.
    metrics: Prometheus metrics, counted in every pool process.
    broker_state: reads queues, unacked, dead letters and migrations at scrape time.
    probes: liveness and readiness of the worker (pure decisions, the consumer step, the WSGI app).
    status_http: the main process's HTTP server (/metrics, /livez, /readyz).
    tracing: turn tracing on in each process that runs jobs (CARDS_TRACING).
    pool: an explicit ``-P prefork`` honoured, an unsized prefork pool sized per core.
    siblings: the plain command's other threads-pool worker processes (one per core).
    security: refuse unsafe serializers.
    lua/: the Redis scripts of ordering and ratelimit.
"""

from worker.app import app

__all__ = ["app"]

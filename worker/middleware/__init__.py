"""The steps of the job pipeline (:mod:`worker.pipeline`), one concern each.

Modules:
    outcomes: one log line and one metric per finished job, a metric per retry.
    notify: queue a finished job's callback.
    dead_letters: keep a job that failed for want of Stripe or configuration.
    customer_order: one writer per customer, newest request wins.
    budget: a token from the shared rate limiter before each Stripe call.
    retries: per-job attempt state; what a Stripe failure makes of the job.
    tracing: the job's id, outcome and attempts on its trace span (CARDS_TRACING).
"""

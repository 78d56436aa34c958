"""Tracing: the job's id, outcome and attempts on the span that runs it.

Only in the pipeline when ``CARDS_TRACING`` is on (:mod:`worker.wiring`). The
span is the current one, the Celery task's; a retry marks it with its reason.
The attributes are the outcome step's summary of the job: never its customer.
"""

from __future__ import annotations

from opentelemetry import trace

from worker.middleware.outcomes import job_summary
from worker.pipeline import Answer, Attempted, JobCall, RetryLater, Step

__all__ = ["TraceAttributes"]


class TraceAttributes(Step):
    def after_attempt(self, call: JobCall, outcome: Attempted) -> Attempted:
        if isinstance(outcome, RetryLater):
            span = trace.get_current_span()
            span.set_attribute("cards.job_id", call.job_id)
            span.set_attribute("cards.retry_reason", outcome.reason)
        return outcome

    def after_job(self, call: JobCall, answer: Answer) -> None:
        outcome, attempts = job_summary(call, answer)
        span = trace.get_current_span()
        span.set_attributes(
            {
                "cards.task": call.task,
                "cards.job_id": call.job_id,
                "cards.outcome": outcome,
                "cards.attempts": attempts,
            }
        )
        span.add_event("job_finished", {"cards.job_id": call.job_id, "cards.outcome": outcome})

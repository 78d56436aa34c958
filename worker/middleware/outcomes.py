"""Outcomes: one JSON log line and one metric per finished job, a metric per retry.

The outermost step, so it sees every answer, invalid jobs included. The line
holds the task, job id, customer id, outcome, attempts and latency: no
personal data beyond the customer id, never a secret.
"""

from __future__ import annotations

import json
import logging
import time

from worker.metrics import JOB_OUTCOMES, JOB_RETRIES
from worker.pipeline import Answer, Attempted, JobCall, RetryLater, Step

__all__ = ["Outcomes", "job_summary"]

outcome_logger = logging.getLogger("cards.outcome")


def job_summary(call: JobCall, answer: Answer) -> tuple[str, int]:
    """A finished job's outcome (``ok`` or its failure kind) and its attempts. (Pure.)"""
    data = answer["data"] if isinstance(answer["data"], dict) else {}
    error = data if not answer["status"] else None
    attempts = int(error["attempts"]) if error and "attempts" in error else call.delivery.number
    return ("ok" if answer["status"] else str(data.get("kind", "failed"))), attempts


class Outcomes(Step):
    def after_attempt(self, call: JobCall, outcome: Attempted) -> Attempted:
        if isinstance(outcome, RetryLater):
            JOB_RETRIES.labels(call.task, outcome.reason).inc()
        return outcome

    def after_job(self, call: JobCall, answer: Answer) -> None:
        outcome, attempts = job_summary(call, answer)
        JOB_OUTCOMES.labels(call.task, call.delivery.queue, outcome).inc()
        outcome_logger.info(
            json.dumps(
                {
                    "event": "job_finished",
                    "task": call.task,
                    "job_id": call.job_id,
                    "customer": call.job.userId if call.job is not None else None,
                    "outcome": outcome,
                    "attempts": attempts,
                    "latency_ms": round((time.monotonic() - call.started) * 1000, 1),
                }
            )
        )

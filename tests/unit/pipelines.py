"""A job pipeline driven as a job task drives it, one delivery per call (for unit tests)."""

from __future__ import annotations

from typing import Any

from worker.pipeline import Delivery, JobKind, Outcome, Pipeline, Step


class JobRunner:
    """``kind`` behind ``steps`` (outermost first)."""

    def __init__(self, kind: JobKind, *steps: Step) -> None:
        self.pipeline = Pipeline(kind, steps)

    def run(
        self, job: Any, job_id: str, *, first_delivery: bool = False, queue: str = "cards"
    ) -> Outcome:
        delivery = Delivery(first=first_delivery, queue=queue)
        return self.pipeline.run(job_id, delivery, job.to_task_kwargs())

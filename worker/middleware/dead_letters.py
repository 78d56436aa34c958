"""Dead letters: a job that failed only because of Stripe's availability or the
worker's configuration is kept, with its fields, for ``cards dlq replay``.

The envelope still says why the job failed if the store cannot be written;
only the replay shortcut is lost.
"""

from __future__ import annotations

import logging
import time
from typing import cast

import redis

from cards.deadletters import DeadLetter, DeadLetterStore, is_dead_letter
from cards.envelope import Envelope
from worker.pipeline import Answer, JobCall, Step

__all__ = ["DeadLetters"]

logger = logging.getLogger(__name__)


class DeadLetters(Step):
    def __init__(self, store: DeadLetterStore) -> None:
        self.store = store

    def after_job(self, call: JobCall, answer: Answer) -> None:
        if call.job is None or not is_dead_letter(cast(Envelope, answer)):
            return
        fields = call.job.with_job_id(call.job_id).to_task_kwargs()
        try:
            self.store.add(DeadLetter(call.job_id, fields, cast(Envelope, answer), time.time()))
        except redis.RedisError:
            logger.critical("job %s: could not keep it as a dead letter", call.job_id)

"""The benchmarks' stand-in worker answers a job as a worker would, after its latency.

A stock Celery client (no code of ours) sends the job and reads the answer back
through ``AsyncResult``: the key, meta and pub/sub message are the result
backend's own.
"""

from __future__ import annotations

import time
from pathlib import Path

from celery import Celery

from bench.gateway import STAND_IN_QUEUE, stand_in_worker
from harness.processes import run_redis

LATENCY_MS = 300
ANSWER = {"status": True, "message": "ok", "data": {"id": "cus_standin"}}


def test_the_stand_in_answers_each_job_after_its_latency(tmp_path: Path) -> None:
    with run_redis() as server:
        env = {"CELERY_BROKER_URL": server.url(), "CELERY_RESULT_BACKEND": server.url()}
        client = Celery("stock", broker=server.url(), backend=server.url())
        with stand_in_worker(env, tmp_path, LATENCY_MS, ANSWER):
            sent = time.monotonic()
            results = [
                client.send_task("cards.set_default_card", kwargs={"n": n}, queue=STAND_IN_QUEUE)
                for n in range(3)
            ]
            answers = [result.get(timeout=30) for result in results]
            took = time.monotonic() - sent
    assert answers == [ANSWER] * 3
    assert took >= LATENCY_MS / 1000  # none answered before its latency

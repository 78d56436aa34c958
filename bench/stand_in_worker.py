"""A stand-in for the worker, so that a benchmark can give the gateway the host.

It takes each job from ``--queue`` and, ``--latency`` ms later, stores ``--answer``
(an envelope file) as the job's SUCCESS result through :class:`cards.results.ResultBackend`:
the same key, meta, expiry and pub/sub message as a real worker's. No task runs and
no Stripe is called, so a job costs it well under a millisecond of CPU where a real
worker spends several: measured against a gateway, the cores go to the gateway.
Jobs are answered in the order taken, each its latency after it was taken.
Not a worker: benchmarks only. Prints ``ready`` once it reads the queue.

Usage::

    python -m bench.stand_in_worker --queue Q --latency 200 --answer envelope.json
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Final

from cards.results import ResultBackend
from producers.client import producer_app

#: Jobs taken from the queue with one RPOP after each wake-up.
TAKE_BATCH: Final = 500
#: BRPOP timeout, seconds: how long an idle stand-in blocks before it looks again.
IDLE_SECONDS: Final = 1


class StandIn:
    """Take jobs from a queue; answer each one ``latency`` seconds after taking it."""

    def __init__(self, queue: str, latency: float, answer: dict[str, Any]) -> None:
        self._results = ResultBackend(producer_app())
        self._queue = queue
        self._latency = latency
        self._answer = answer
        self._due: deque[tuple[float, str]] = deque()
        self._taken = threading.Condition()

    def connect(self) -> None:
        """Fail now, with Redis's error, if the result backend cannot be reached."""
        self._results.client.ping()

    def take(self) -> None:
        """Forever: move jobs from the queue to the due list (run in a thread)."""
        client = self._results.client
        while True:
            first = client.brpop([self._queue], timeout=IDLE_SECONDS)
            if first is None:
                continue
            items = [first[1], *(client.rpop(self._queue, TAKE_BATCH) or [])]
            at = time.monotonic() + self._latency
            with self._taken:
                self._due.extend((at, json.loads(item)["headers"]["id"]) for item in items)
                self._taken.notify()

    def answer(self) -> None:
        """Forever: store the answers of the jobs that are due, many per round trip."""
        while True:
            with self._taken:
                self._taken.wait_for(lambda: bool(self._due))
                wait = self._due[0][0] - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            now = time.monotonic()
            due: list[str] = []
            with self._taken:
                while self._due and self._due[0][0] <= now:
                    due.append(self._due.popleft()[1])
            self._results.store_many(dict.fromkeys(due, self._answer))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--queue", required=True)
    parser.add_argument("--latency", type=float, required=True, help="ms from take to answer")
    parser.add_argument("--answer", type=Path, required=True, help="the envelope, a JSON file")
    args = parser.parse_args(argv)
    stand_in = StandIn(args.queue, args.latency / 1000, json.loads(args.answer.read_text()))
    stand_in.connect()
    threading.Thread(target=stand_in.take, name="take", daemon=True).start()
    print("ready", flush=True)
    stand_in.answer()
    return 0


if __name__ == "__main__":
    sys.exit(main())

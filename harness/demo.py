"""``make run``: real jobs through a real broker, worker and (emulated) Stripe.

Starts a broker (``CELERY_BROKER_URL`` if set; else, with ``--broker rabbitmq``
(``make run-rabbitmq``), a private RabbitMQ node; else ``redis-server`` from
PATH on a free port; else fakeredis's TCP server), the Stripe emulator and one
``celery -A worker worker``; enqueues good and bad jobs; prints every
envelope; stops what it started. An AMQP broker gets a Redis (the same
fallbacks) for results and job state.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from celery import Celery

from cards.jobs import TASK_NAME, InvalidJob
from cards.rabbitmq import is_amqp
from harness.processes import client_app, free_port, run_redis, run_worker
from harness.rabbitmq import run_rabbit_node
from producers import enqueue_set_default_card, get_result
from stripe_emulator.process import run_emulator

DEMO_API_KEY = "sk_test_demo_not_a_real_key"


@contextmanager
def broker(kind: str) -> Iterator[tuple[str, str]]:
    """The broker's URL and the result backend's (Redis's, on an AMQP broker)."""
    given = os.environ.get("CELERY_BROKER_URL")
    with ExitStack() as stack:
        if given:
            print("broker: CELERY_BROKER_URL from the environment")
            url = given
        elif kind == "rabbitmq":
            base = stack.enter_context(tempfile.TemporaryDirectory(prefix="cards-demo-rabbitmq-"))
            node = stack.enter_context(run_rabbit_node(Path(base)))
            print(f"broker: a private RabbitMQ node on 127.0.0.1:{node.port} (quorum queues)")
            url = node.url()
        else:
            url = stack.enter_context(redis("broker"))
        if not is_amqp(url):
            yield url, url
        elif os.environ.get("CELERY_RESULT_BACKEND"):
            yield url, os.environ["CELERY_RESULT_BACKEND"]
        else:
            yield url, stack.enter_context(redis("results and job state"))


@contextmanager
def redis(role: str) -> Iterator[str]:
    """A Redis URL: ``redis-server`` from PATH on a free port, else fakeredis's TCP server."""
    if shutil.which("redis-server"):
        with run_redis() as server:
            print(f"{role}: redis-server on 127.0.0.1:{server.port}")
            yield server.url()
    else:
        from fakeredis import TcpFakeServer

        port = free_port()
        fake = TcpFakeServer(("127.0.0.1", port), server_type="redis")
        thread = threading.Thread(target=fake.serve_forever, daemon=True)
        thread.start()
        print(f"{role}: fakeredis TCP server on 127.0.0.1:{port} (no redis-server on PATH)")
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            fake.shutdown()


def show(label: str, envelope: Any) -> None:
    print(f"\n=== {label}")
    print(json.dumps(envelope, ensure_ascii=False, indent=2))


def run_samples(app: Celery, emulator_admin: Any) -> None:
    customers = emulator_admin.seed(3, cards_per_customer=2)
    alice, bob, carol = customers
    jobs: list[tuple[str, str]] = [
        (
            "card_ becomes default_source",
            enqueue_set_default_card(alice["id"], alice["cards"][1], app=app),
        ),
        (
            "src_ becomes default_source",
            enqueue_set_default_card(bob["id"], bob["sources"][0], app=app),
        ),
        (
            "pm_ becomes invoice_settings.default_payment_method",
            enqueue_set_default_card(carol["id"], carol["payment_methods"][0], app=app),
        ),
        ("no such customer", enqueue_set_default_card("cus_DoesNotExist0", "card_1x", app=app)),
        (
            "card of another customer",
            enqueue_set_default_card(alice["id"], bob["cards"][0], app=app),
        ),
    ]
    emulator_admin.script_faults(carol["id"], ["error_500", "timeout_after_commit"])
    jobs.append(
        (
            "Stripe 500, then a timeout after commit: recovered",
            enqueue_set_default_card(carol["id"], carol["cards"][1], app=app),
        )
    )
    raw = app.send_task(TASK_NAME, kwargs={"userId": 42, "defaultSource": "card_x"})
    jobs.append(("raw Celery message with bad kwargs (no producer validation)", raw.id))

    try:
        enqueue_set_default_card("not-a-customer", "card_1", app=app)
    except InvalidJob as exc:
        print(f"\n=== refused by the producer, nothing enqueued\n{exc}")

    for label, job_id in jobs:
        show(f"{label}  [job {job_id}]", get_result(job_id, timeout=60, app=app))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--broker",
        choices=("redis", "rabbitmq"),
        default="redis",
        help="rabbitmq: a private RabbitMQ node (quorum queues) carries the jobs",
    )
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        broker_url, results_url = stack.enter_context(broker(args.broker))
        emulator = stack.enter_context(run_emulator(api_key=DEMO_API_KEY))
        print(f"stripe emulator: {emulator.url}")
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cards-demo-")))
        env = {
            "CELERY_BROKER_URL": broker_url,
            "CELERY_RESULT_BACKEND": results_url,
            "STRIPE_API_KEY": DEMO_API_KEY,
            "STRIPE_API_BASE": emulator.url,
            "CARDS_STRIPE_TIMEOUT_SECONDS": "2",
            "CARDS_RETRY_BACKOFF_MAX_SECONDS": "2",
        }
        stack.enter_context(run_worker(env, log_dir / "worker.log", concurrency=2))
        print("worker: celery -A worker worker -l info -c 2 (ready)")
        run_samples(client_app(broker_url, results_url), emulator.admin)
    print("\nstopped the worker, the emulator and the broker.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

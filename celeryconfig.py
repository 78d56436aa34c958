"""Celery configuration for producers and workers, read from :mod:`cards.settings`.

Every value that an operator may change comes from the settings model (and so
from an environment variable); the rest are delivery guarantees this project
relies on and are not meant to be changed:

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a job is acknowledged
  only once it has finished; if its worker dies, Redis hands it to another one.
  Stripe idempotency keys make the second run safe.
- prefetch 1: a worker holds one waiting job per process, not a batch that
  would wait behind a slow Stripe call.
- JSON only: pickle from the network would be code execution.
- one ``visibility_timeout`` for broker and result backend, well above every
  retry countdown (enforced by the settings model).
- task events and sent events: Flower shows queued, running and finished jobs.
- ``broker_transport``: kombu's Redis transport (or its Sentinel one, for
  ``sentinel://`` URLs) as :mod:`cards.transport` changes it: a message is never
  lost between its pop and its ``unacked`` record, a job from any producer is
  taken at once, and a worker reconnects when Redis restarts or fails over.
  An ``amqp://`` broker gets kombu's own py-amqp transport and quorum queues
  (:mod:`cards.rabbitmq`).
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

from cards.rabbitmq import is_amqp
from cards.redis_urls import celery_url_config
from cards.settings import get_settings

_settings = get_settings()
_urls = celery_url_config(
    _settings.celery_broker_url, _settings.result_backend_url, _settings.sentinel_master
)

broker_url: str = _urls["broker_url"]
# Our transport (docs/transport.md says what it changes and why), for
# redis://, rediss:// and sentinel:// URLs; kombu's py-amqp one for amqp:// (None).
broker_transport: str | None = _urls["broker_transport"]
if urlsplit(broker_url).scheme == "rediss" and "ssl_cert_reqs" not in urlsplit(broker_url).query:
    # kombu gives a bare rediss:// URL this default only when it picks the
    # transport from the scheme itself; keep its behaviour with ours.
    broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_NONE}
result_backend: str = _urls["result_backend"]
broker_connection_retry_on_startup = True
broker_transport_options: dict[str, object] = dict(_urls["broker_transport_options"])
if not is_amqp(broker_url):
    broker_transport_options |= {
        "visibility_timeout": _settings.visibility_timeout_seconds,
        # kombu sweeps for abandoned jobs every interval x throttle seconds (100 s by
        # default); with throttle 1 the interval alone says how late a dead worker's
        # job can be redelivered beyond the visibility timeout.
        "unacked_restore_interval": _settings.unacked_restore_interval_seconds,
        "unacked_restore_throttle": 1,
        # The sweep holds a Redis lock that kombu expires after 300 s: a worker killed
        # mid-sweep stopped every other worker's sweep that long. One interval at most
        # (overlapping sweeps are safe: each restore is a WATCH transaction).
        "unacked_mutex_expire": _settings.unacked_restore_interval_seconds,
        "queue_watcher": _settings.queue_watcher,
    }
# The rest that the broker URL brings: publish retries through a failover or restart;
# for RabbitMQ its quorum job queues and native delayed delivery (cards/rabbitmq.py).
_SET_HERE = {
    "broker_url",
    "broker_transport",
    "broker_transport_options",
    "result_backend",
    "result_backend_transport_options",
}
globals().update({name: value for name, value in _urls.items() if name not in _SET_HERE})
result_backend_transport_options = {
    "visibility_timeout": _settings.visibility_timeout_seconds,
    **_urls["result_backend_transport_options"],
}

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

if _settings.signs_messages:
    # Celery's auth serializer signs (does not encrypt) each task message; a
    # worker then accepts only messages signed by a certificate in its store.
    # Results stay plain JSON.
    task_serializer = "auth"
    accept_content = ["auth"]
    security_key = str(_settings.signing_key_file)
    security_certificate = str(_settings.signing_cert_file)
    security_cert_store = str(_settings.signing_cert_store)
    security_digest = "sha256"

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1

task_default_queue = _settings.queue
result_expires = _settings.result_expires_seconds
# A job that finishes while Redis restarts must still store its envelope:
# retry the result backend on connection errors (the chaos suite's R2 lost
# envelopes of applied writes without this), for about a minute at most.
result_backend_always_retry = True
result_backend_max_retries = 12
result_backend_base_sleep_between_retries_ms = 100
result_backend_max_sleep_between_retries_ms = 10_000

# The plain `celery -A worker worker` runs jobs on threads: a job spends nearly all
# of its time waiting for Stripe, so one process keeps `worker_concurrency` calls in
# flight (see README, Sizing live workers). -P and -c on the command line still win.
worker_pool = _settings.worker_pool
worker_concurrency = _settings.worker_concurrency

worker_send_task_events = True
task_send_sent_event = True

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
"""

from __future__ import annotations

from cards.settings import get_settings

_settings = get_settings()

broker_url = _settings.celery_broker_url
result_backend = _settings.result_backend_url
broker_connection_retry_on_startup = True
broker_transport_options = {
    "visibility_timeout": _settings.visibility_timeout_seconds,
    # kombu sweeps for abandoned jobs every interval x throttle seconds (100 s by
    # default); with throttle 1 the interval alone says how late a dead worker's
    # job can be redelivered beyond the visibility timeout.
    "unacked_restore_interval": _settings.unacked_restore_interval_seconds,
    "unacked_restore_throttle": 1,
}
result_backend_transport_options = {"visibility_timeout": _settings.visibility_timeout_seconds}

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1

task_default_queue = _settings.queue
result_expires = _settings.result_expires_seconds

worker_send_task_events = True
task_send_sent_event = True

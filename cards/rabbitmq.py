"""RabbitMQ as the broker: which URLs are AMQP, and the Celery settings they get.

With an ``amqp://`` or ``amqps://`` broker URL, kombu's standard py-amqp transport
carries the jobs (RabbitMQ itself gives a dead consumer's unacknowledged messages
to another one). Every job queue is a quorum queue on a topic exchange, every
publish waits for the broker's confirm, prefetch is per consumer (quorum queues
have no global QoS) and a retry countdown waits in RabbitMQ's delay queues (native
delayed delivery), not in a worker. Redis still holds results, job state, locks
and the rate budget. Versions and caveats: ``docs/rabbitmq.md``.
"""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import urlsplit

__all__ = [
    "AMQP_SCHEMES",
    "PUBLISH_RETRY_POLICY",
    "celery_config",
    "is_amqp",
    "queue_of",
]

AMQP_SCHEMES: Final = frozenset({"amqp", "amqps", "pyamqp"})
QUEUE_TYPE: Final = "quorum"
#: A producer waits through a broker restart (about 25 s) instead of failing at once.
PUBLISH_RETRY_POLICY: Final = {
    "max_retries": 30,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 1,
}
#: Native delayed delivery routes a delayed message with 28 binary digits, one per
#: delay level, before its queue's routing key: ``0.0.…1.0.cards``.
_DELAY_PREFIX = re.compile(r"^(?:[01]\.){28}")


def is_amqp(url: str) -> bool:
    return urlsplit(url).scheme in AMQP_SCHEMES


def celery_config() -> dict[str, Any]:
    """The Celery settings of an AMQP broker. (Pure.)

    Every queue Celery declares (the default job queue, ``cards.bulk`` when a bulk
    worker or ``cards migrate`` names it) is a quorum queue bound by its name to a
    topic exchange of the same name: native delayed delivery cannot route through a
    direct exchange."""
    return {
        # None: kombu takes the transport from the URL's scheme (py-amqp, TLS for amqps).
        "broker_transport": None,
        "broker_transport_options": {"confirm_publish": True},
        "task_publish_retry_policy": PUBLISH_RETRY_POLICY,
        "task_default_exchange_type": "topic",
        "task_default_queue_type": QUEUE_TYPE,
        "task_create_missing_queue_type": QUEUE_TYPE,
        "task_create_missing_queue_exchange_type": "topic",
        "worker_detect_quorum_queues": True,
        "broker_native_delayed_delivery_queue_type": QUEUE_TYPE,
    }


def queue_of(routing_key: str) -> str:
    """The queue a delivery came from, by its routing key (a delayed one carries the
    delay digits before it). (Pure.)"""
    return _DELAY_PREFIX.sub("", routing_key, count=1)

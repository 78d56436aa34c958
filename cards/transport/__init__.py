"""Our Redis broker transport: kombu's, serving any Celery producer, losing nothing.

``celeryconfig.broker_transport`` names :class:`Transport` (``redis://``,
``rediss://``) or :class:`SentinelTransport` (``sentinel://``), as
``cards.transport:Transport``. How it works and why: ``docs/transport.md``.

Modules:
    channel: kombu's Redis QoS, channels and transports, taking messages with the take script
    kombu_check: the kombu release and private methods the channel relies on, checked at import
    queue_watcher: threads that leave a wake-up token when a queue list gets a message
    lua/: take.lua (take a message into ``unacked`` atomically), wake.lua (leave one token)
"""

from cards.transport.channel import (
    TAKE_SCRIPT,
    WAKE_KEY_PREFIX,
    WAKE_SCRIPT,
    Channel,
    QoS,
    SentinelChannel,
    SentinelTransport,
    Transport,
    wake_key,
)
from cards.transport.kombu_check import SUPPORTED_KOMBU, check_kombu_internals

__all__ = [
    "SUPPORTED_KOMBU",
    "TAKE_SCRIPT",
    "WAKE_KEY_PREFIX",
    "WAKE_SCRIPT",
    "Channel",
    "QoS",
    "SentinelChannel",
    "SentinelTransport",
    "Transport",
    "check_kombu_internals",
    "wake_key",
]

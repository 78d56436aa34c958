"""The kombu internals our channel relies on, checked when the transport is imported.

:mod:`cards.transport.channel` subclasses kombu's private Redis channel; it was
written for one kombu minor release (:data:`SUPPORTED_KOMBU`, pinned in
``uv.lock``). :func:`check_kombu_internals` fails loudly, naming the private method
or attribute that changed, rather than letting a worker lose messages silently.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from typing import Any

from kombu.transport import redis as _kombu_redis

__all__ = ["SUPPORTED_KOMBU", "check_kombu_internals", "kombu_redis"]

SUPPORTED_KOMBU = (5, 7)

#: The typing stubs cover kombu's public API only; the channel uses the private
#: methods of its Redis channel (checked by check_kombu_internals).
kombu_redis: Any = _kombu_redis

#: kombu methods the channel replaces or relies on, with the parameters it expects.
_EXPECTED_SIGNATURES: dict[str, tuple[str, ...]] = {
    "Channel._brpop_start": ("self", "timeout"),
    "Channel._brpop_read": ("self", "options"),
    "Channel._connparams": ("self", "asynchronous"),
    "Channel._create_client": ("self", "asynchronous"),
    "Channel._get_pool": ("self", "asynchronous"),
    "Channel._disconnect_pools": ("self",),
    "Channel._flush_brpop_reauth": ("self",),
    "Channel._q_for_pri": ("self", "queue", "pri"),
    "Channel.basic_consume": ("self", "queue", "args", "kwargs"),
    "Channel._basic_cancel": ("self", "consumer_tag"),
    "Channel.conn_or_acquire": ("self", "client"),
    "QoS.append": ("self", "message", "delivery_tag"),
    "QoS.ack": ("self", "delivery_tag"),
}


def check_kombu_internals() -> None:
    """Fail loudly if kombu is not the release the channel patches, or its private
    Redis channel methods changed shape; review the channel before adapting it."""
    installed = importlib.metadata.version("kombu")
    version = tuple(int(part) for part in installed.split(".")[:2])
    if version != SUPPORTED_KOMBU:
        raise RuntimeError(
            f"cards.transport was written for kombu {SUPPORTED_KOMBU[0]}.{SUPPORTED_KOMBU[1]}.x, "
            f"found {installed}: check that BRPOP is still followed by QoS.append "
            "and that Channel.close still reaches _connparams after collect(), then update "
            "SUPPORTED_KOMBU"
        )
    for name, expected in _EXPECTED_SIGNATURES.items():
        owner, attr = name.split(".")
        function = getattr(getattr(kombu_redis, owner), attr, None)
        if function is None:
            raise RuntimeError(f"cards.transport: kombu.transport.redis.{name} is gone")
        found = tuple(inspect.signature(function).parameters)
        if found != expected:
            raise RuntimeError(
                f"cards.transport: kombu.transport.redis.{name} changed: {found} != {expected}"
            )
    for attr in (
        "_in_poll",
        "_brpop_sent_at",
        "_closing",
        "pool",
        "unacked_key",
        "unacked_index_key",
    ):
        if not hasattr(kombu_redis.Channel, attr):
            raise RuntimeError(f"cards.transport: kombu.transport.redis.Channel.{attr} is gone")

"""Redis URLs: ``redis://``, ``rediss://`` and ``sentinel://``, one way to open each.

A Sentinel URL lists every sentinel, ``;``-separated, each in the ``sentinel://``
scheme; the password and database of the first apply to the master (Celery's own
form for its result backend):
``sentinel://:PASSWORD@10.0.0.1:26379/0;sentinel://10.0.0.2:26379;sentinel://10.0.0.3:26379``.
The master's name is ``CARDS_SENTINEL_MASTER``. Clients built here find the
current master through the sentinels on every reconnect, so they follow a failover.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from cards import rabbitmq

__all__ = [
    "SentinelUrl",
    "async_redis_client",
    "celery_url_config",
    "is_sentinel",
    "parse_sentinel_url",
    "redis_client",
]

SENTINEL_SCHEME = "sentinel"
#: Our broker transports (an explicit transport wins over the URL's scheme).
TRANSPORT = "cards.transport:Transport"
SENTINEL_TRANSPORT = "cards.transport:SentinelTransport"
#: Celery's publish retries with a Sentinel broker: about 25 s in all.
FAILOVER_PUBLISH_RETRY_POLICY = {
    "max_retries": 30,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 1,
}
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: tuple[tuple[str, int], ...]
    db: int
    username: str | None
    password: str | None


def is_sentinel(url: str) -> bool:
    return urlsplit(url).scheme == SENTINEL_SCHEME


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Split a ``sentinel://…;sentinel://…`` URL; ``ValueError`` names what is wrong."""
    parts = [part.strip() for part in url.split(";") if part.strip()]
    sentinels: list[tuple[str, int]] = []
    for part in parts:
        split = urlsplit(part)
        if split.scheme != SENTINEL_SCHEME or not split.hostname:
            raise ValueError("every part of a Sentinel URL must be sentinel://host:port")
        sentinels.append((split.hostname, split.port or DEFAULT_SENTINEL_PORT))
    if not sentinels:
        raise ValueError("a Sentinel URL needs at least one sentinel://host:port")
    first = urlsplit(parts[0])
    path = first.path.strip("/")
    if path and not path.isdigit():
        raise ValueError("the database of a Sentinel URL must be a number")
    return SentinelUrl(
        sentinels=tuple(sentinels),
        db=int(path or 0),
        username=unquote(first.username) if first.username else None,
        password=unquote(first.password) if first.password else None,
    )


def redis_client(url: str, master_name: str, **options: object) -> redis.Redis:
    """A client for ``url``; for a Sentinel URL, of the current master of ``master_name``."""
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **options)
    parsed = parse_sentinel_url(url)
    manager = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(parsed.sentinels),
        socket_timeout=options.get("socket_timeout", 5),
    )
    client: redis.Redis = manager.master_for(  # type: ignore[no-untyped-call]
        master_name,
        db=parsed.db,
        username=parsed.username,
        password=parsed.password,
        **options,
    )
    return client


def celery_url_config(broker_url: str, result_backend: str, master_name: str) -> dict[str, Any]:
    """The Celery settings that follow from the two URLs: the broker transport, and
    what a Sentinel broker or result backend needs (transport options to merge into
    the others, and publish retries that outlast a failover); an AMQP broker gets
    :func:`cards.rabbitmq.celery_config`."""
    config: dict[str, Any] = {
        "broker_url": broker_url,
        "broker_transport": TRANSPORT,
        "broker_transport_options": {},
        "result_backend": result_backend,
        "result_backend_transport_options": {},
    }
    if rabbitmq.is_amqp(broker_url):
        config.update(rabbitmq.celery_config())
    if is_sentinel(broker_url):
        parse_sentinel_url(broker_url)  # a malformed URL fails here, naming the problem
        config["broker_transport"] = SENTINEL_TRANSPORT
        config["broker_transport_options"] = {"master_name": master_name}
        # A producer waits through a failover (sentinels take a few seconds to
        # promote a replica) instead of failing after Celery's default 0.6 s.
        config["task_publish_retry_policy"] = FAILOVER_PUBLISH_RETRY_POLICY
    if is_sentinel(result_backend):
        # Celery's Sentinel result backend reads every sentinel from its URL.
        config["result_backend_transport_options"] = {"master_name": master_name}
    return config


def async_redis_client(url: str, master_name: str, **options: Any) -> redis.asyncio.Redis:
    """:func:`redis_client` for asyncio: a client for ``url`` (or the Sentinel master)."""
    if not is_sentinel(url):
        return redis.asyncio.Redis.from_url(url, **options)
    parsed = parse_sentinel_url(url)
    manager = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(parsed.sentinels), socket_timeout=options.get("socket_timeout", 5)
    )
    client: redis.asyncio.Redis = manager.master_for(
        master_name, db=parsed.db, username=parsed.username, password=parsed.password, **options
    )
    return client

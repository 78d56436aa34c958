"""Redis URLs: Sentinel URLs parsed, and the Celery settings each kind of URL gets."""

from __future__ import annotations

import pytest

from cards.redis_urls import (
    SENTINEL_TRANSPORT,
    TRANSPORT,
    celery_url_config,
    is_sentinel,
    parse_sentinel_url,
)

THREE = "sentinel://:s%40cret@10.0.0.1:26379/2;sentinel://10.0.0.2:26380;sentinel://10.0.0.3"


def test_a_sentinel_url_names_every_sentinel_and_the_masters_db_and_password() -> None:
    parsed = parse_sentinel_url(THREE)
    assert parsed.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379))
    assert (parsed.db, parsed.username, parsed.password) == (2, None, "s@cret")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("sentinel://10.0.0.1:26379;redis://10.0.0.2:6379", "every part"),
        ("sentinel://", "every part"),
        ("sentinel://10.0.0.1:26379/zero", "database"),
    ],
)
def test_a_malformed_sentinel_url_is_refused_with_its_problem(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_sentinel_url(url)


@pytest.mark.parametrize(
    ("broker", "backend", "transport", "broker_options", "backend_options", "retries"),
    [
        ("redis://h:6379/0", "redis://h:6379/0", TRANSPORT, {}, {}, False),
        ("rediss://h:6380/0", "redis://h:6379/1", TRANSPORT, {}, {}, False),
        (THREE, THREE, SENTINEL_TRANSPORT, {"master_name": "m"}, {"master_name": "m"}, True),
        (THREE, "redis://h:6379/0", SENTINEL_TRANSPORT, {"master_name": "m"}, {}, True),
        ("redis://h:6379/0", THREE, TRANSPORT, {}, {"master_name": "m"}, False),
    ],
)
def test_celery_settings_follow_the_urls(
    broker: str,
    backend: str,
    transport: str,
    broker_options: dict[str, str],
    backend_options: dict[str, str],
    retries: bool,
) -> None:
    config = celery_url_config(broker, backend, "m")
    assert config["broker_url"] == broker  # kombu reads every sentinel from it
    assert config["result_backend"] == backend
    assert config["broker_transport"] == transport
    assert config["broker_transport_options"] == broker_options
    assert config["result_backend_transport_options"] == backend_options
    # Through a failover (seconds), not Celery's default 0.6 s of publish retries.
    assert ("task_publish_retry_policy" in config) is retries
    assert is_sentinel(broker) is (transport == SENTINEL_TRANSPORT)

"""RabbitMQ as the broker: the settings an amqp:// URL gets, and what stays on Redis."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cards.rabbitmq import celery_config, is_amqp, queue_of
from cards.redis_urls import TRANSPORT, celery_url_config
from cards.settings import Settings

AMQP = "amqp://user:secret@rabbit:5672/cards"


@pytest.mark.parametrize(
    ("url", "amqp"),
    [
        (AMQP, True),
        ("amqps://rabbit:5671//", True),
        ("pyamqp://rabbit//", True),
        ("redis://h:6379/0", False),
        ("sentinel://h:26379", False),
    ],
)
def test_amqp_urls_are_told_by_their_scheme(url: str, amqp: bool) -> None:
    assert is_amqp(url) is amqp


def test_an_amqp_broker_gets_kombus_own_transport_quorum_queues_and_confirms() -> None:
    config = celery_url_config(AMQP, "redis://h:6379/1", "m")
    assert config["broker_transport"] is None  # py-amqp, from the scheme
    assert config["broker_transport"] != TRANSPORT
    assert config["broker_transport_options"] == {"confirm_publish": True}
    assert config["task_default_queue_type"] == "quorum"
    assert config["task_create_missing_queue_type"] == "quorum"
    assert config["task_create_missing_queue_exchange_type"] == "topic"
    assert config["task_default_exchange_type"] == "topic"  # native delayed delivery needs it
    assert config["broker_native_delayed_delivery_queue_type"] == "quorum"
    assert config["worker_detect_quorum_queues"] is True
    assert config["task_publish_retry_policy"]["max_retries"] > 3
    assert celery_config() == {k: config[k] for k in celery_config()}


@pytest.mark.parametrize(
    ("routing_key", "queue"),
    [
        ("cards", "cards"),
        ("cards.bulk", "cards.bulk"),
        ("0." * 26 + "1.0.cards", "cards"),
        ("0." * 27 + "1.cards.bulk", "cards.bulk"),
        ("1.0.cards", "1.0.cards"),  # not 28 digits: a queue's own name
    ],
)
def test_a_delayed_deliverys_routing_key_names_its_queue(routing_key: str, queue: str) -> None:
    assert queue_of(routing_key) == queue


def test_an_amqp_broker_needs_a_redis_url_for_the_rest() -> None:
    with pytest.raises(ValidationError, match="CELERY_RESULT_BACKEND to a Redis URL"):
        Settings(celery_broker_url=AMQP, _env_file=None)
    with pytest.raises(ValidationError, match="must be a Redis URL"):
        Settings(celery_broker_url=AMQP, celery_result_backend=AMQP, _env_file=None)


@pytest.mark.parametrize(
    ("broker", "backend", "state", "job_state"),
    [
        (AMQP, "redis://r:6379/1", None, "redis://r:6379/1"),
        (AMQP, "redis://r:6379/1", "redis://s:6379/2", "redis://s:6379/2"),
        ("redis://b:6379/0", "redis://r:6379/1", None, "redis://b:6379/0"),
        ("redis://b:6379/0", None, None, "redis://b:6379/0"),
    ],
)
def test_job_state_is_never_on_the_amqp_broker(
    broker: str, backend: str | None, state: str | None, job_state: str
) -> None:
    settings = Settings(
        celery_broker_url=broker,
        celery_result_backend=backend,
        state_redis_url=state,
        _env_file=None,
    )
    assert settings.job_state_url == job_state
    assert not is_amqp(settings.result_backend_url)

"""The scrape-time Collector: right counts, bounded labels however many jobs, customers and
migrations there are, a bounded migration SCAN, and a scrape that survives a Redis outage."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest
import redis
from prometheus_client import CollectorRegistry
from redis.backoff import NoBackoff
from redis.retry import Retry

from cards.deadletters import DeadLetter, DeadLetterStore
from cards.envelope import ErrorKind, failure
from cards.migration_records import LineOutcome
from producers.migrate.store import MigrationStore
from worker.broker_state import (
    MIGRATION_ROW_STATES,
    BrokerStateCollector,
    MigrationCensus,
    message_requested_at,
    queue_keys,
)

#: Real time: the stores stamp records and expire keys by the clock.
NOW = float(int(time.time()))
MINUTE_AGO = datetime.fromtimestamp(NOW - 60, UTC).isoformat()
QUEUES = ["cards", "cards.bulk"]


def kombu_message(kwargs: dict[str, Any], tag: str = "t1") -> str:
    """A task message as kombu's Redis transport stores it (protocol 2, base64 body)."""
    body = base64.b64encode(json.dumps([[], kwargs, {}]).encode()).decode()
    return json.dumps(
        {
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"task": "cards.set_default_card", "id": tag},
            "properties": {
                "body_encoding": "base64",
                "delivery_tag": tag,
                "delivery_info": {"exchange": "", "routing_key": "cards"},
            },
        }
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (kombu_message({"requested_at": "2027-01-15T08:00:00Z"}), 1_800_000_000.0),
        (kombu_message({"requested_at": "2027-01-15T08:00:00+00:00"}), 1_800_000_000.0),
        (kombu_message({"userId": "cus_1"}), None),
        (kombu_message({"requested_at": "yesterday"}), None),
        ('{"body": "not base64 json", "properties": {}}', None),
        ("not json", None),
        (None, None),
    ],
)
def test_a_messages_requested_at_is_read_when_it_has_one(
    raw: str | None, expected: float | None
) -> None:
    assert message_requested_at(raw) == expected


def test_queue_keys_cover_every_priority_as_kombu_names_them() -> None:
    assert queue_keys("cards") == ["cards", "cards\x06\x163", "cards\x06\x166", "cards\x06\x169"]


def samples(collector: BrokerStateCollector) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{metric name: {label set: value}} from one scrape."""
    registry = CollectorRegistry()
    registry.register(collector)
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in registry.collect():
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def one(
    found: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str
) -> float:
    return found[name][tuple(sorted(labels.items()))]


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


def fill(client: fakeredis.FakeRedis, customers: int) -> None:
    """A busy system: a job per customer queued, taken, and dead-lettered; many migrations."""
    pipe = client.pipeline()
    for n in range(customers):
        kwargs = {"userId": f"cus_{n:06d}", "requested_at": MINUTE_AGO}
        pipe.lpush("cards", kombu_message(kwargs, tag=f"job-{n}"))
        pipe.lpush("cards.bulk\x06\x169", kombu_message(kwargs, tag=f"bulk-{n}"))
        pipe.hset("unacked", f"tag-{n}", "[]")
        pipe.zadd("unacked_index", {f"tag-{n}": NOW - 30 + n / customers})
    pipe.execute()
    letters = DeadLetterStore(client, ttl_seconds=86400, max_entries=10**6)
    for n in range(customers // 2):
        envelope = failure("Stripe unavailable", ErrorKind.STRIPE_UNAVAILABLE)
        letters.add(DeadLetter(f"job-{n}", {"userId": f"cus_{n:06d}"}, envelope, NOW))


def begin(store: MigrationStore, migration_id: str, rows: int) -> None:
    store.begin(
        migration_id,
        file=f"/data/{migration_id}.csv",
        file_format="csv",
        sha256="0" * 64,
        report=f"/data/{migration_id}.report.csv",
        rows=rows,
        valid=rows,
    )


def test_counts_are_right_and_labels_stay_bounded_with_many_jobs_customers_and_migrations(
    client: fakeredis.FakeRedis,
) -> None:
    fill(client, customers=1000)
    store = MigrationStore(client)
    for n in range(150):
        begin(store, f"mig-{n:04d}", rows=10)
        store.finish(f"mig-{n:04d}", [(1, LineOutcome.DONE), (2, LineOutcome.FAILED)])
        if n % 3 == 0:
            store.complete(f"mig-{n:04d}")
    collector = BrokerStateCollector(client, client, client, QUEUES, clock=lambda: NOW + 30)

    found = samples(collector)

    label_sets = {name: set(series) for name, series in found.items()}
    assert sum(len(series) for series in label_sets.values()) <= 20
    allowed = {"queue": set(QUEUES), "state": {"running", "stalled", "done", "failed"}}
    allowed["state"] |= set(MIGRATION_ROW_STATES)
    for series in label_sets.values():
        for labels in series:
            for key, value in labels:
                assert value in allowed[key], (key, value)
    assert one(found, "cards_broker_state_up") == 1
    assert one(found, "cards_queue_depth", queue="cards") == 1000
    assert one(found, "cards_queue_depth", queue="cards.bulk") == 1000
    assert one(found, "cards_queue_oldest_age_seconds", queue="cards") == 90.0
    assert one(found, "cards_unacked_messages") == 1000
    assert one(found, "cards_unacked_oldest_age_seconds") == 60.0
    assert one(found, "cards_dead_letters") == 500
    assert one(found, "cards_migrations", state="failed") == 50  # complete, one row failed
    assert one(found, "cards_migrations", state="running") == 100
    assert one(found, "cards_migrations", state="stalled") == 0
    assert one(found, "cards_migration_rows", state="done") == 100
    assert one(found, "cards_migration_rows", state="remaining") == 100 * 8
    assert one(found, "cards_migrations_truncated") == 0

    # 90 s after their last change (stamped by the store's real clock) they are stalled.
    later = BrokerStateCollector(client, client, client, QUEUES, clock=lambda: time.time() + 90)
    assert one(samples(later), "cards_migrations", state="stalled") == 100


def test_an_empty_redis_gives_zeros_for_every_series(client: fakeredis.FakeRedis) -> None:
    found = samples(BrokerStateCollector(client, client, client, QUEUES, clock=lambda: NOW))
    assert one(found, "cards_queue_depth", queue="cards") == 0
    assert one(found, "cards_queue_oldest_age_seconds", queue="cards.bulk") == 0
    assert one(found, "cards_unacked_oldest_age_seconds") == 0
    assert set(found["cards_migrations"]) == {
        (("state", s),) for s in ("running", "stalled", "done", "failed")
    }


class CountingScan:
    """A Redis client that counts the keys each SCAN call was allowed to examine."""

    def __init__(self, client: fakeredis.FakeRedis) -> None:
        self.client = client
        self.examined = 0

    def scan(self, cursor: int, match: str, count: int) -> Any:
        self.examined += count
        return self.client.scan(cursor, match=match, count=count)

    def pipeline(self, transaction: bool = False) -> Any:
        return self.client.pipeline(transaction=transaction)


def test_the_migration_scan_examines_a_bounded_number_of_keys_and_resumes(
    client: fakeredis.FakeRedis,
) -> None:
    # Other keys of the same Redis (fakeredis scans in key order: these come first).
    client.mset({f"_kombu.binding.{n}": "{}" for n in range(3000)})
    store = MigrationStore(client)
    for n in range(40):
        begin(store, f"mig-{n}", rows=5)
    census = MigrationCensus(scan_budget=500, max_migrations=1000)
    counting = CountingScan(client)
    seen: list[int] = []
    for _ in range(40):
        counting.examined = 0
        census.discover(counting)  # type: ignore[arg-type]
        assert counting.examined <= 500
        seen.append(len(census.records(counting)))  # type: ignore[arg-type]
    assert seen[0] < 40  # one scrape does not scan everything…
    assert seen[-1] == 40  # …but successive scrapes find every migration


def test_only_the_most_recent_migrations_are_kept_in_view(client: fakeredis.FakeRedis) -> None:
    store = MigrationStore(client)
    for n in range(30):
        begin(store, f"mig-{n:02d}", rows=1)
    census = MigrationCensus(max_migrations=10)
    census.discover(client)
    kept = census.records(client)
    assert len(kept) == 10 and census.truncated
    assert len(census.ids) == 10


def test_a_redis_outage_gives_up_0_not_a_failed_scrape() -> None:
    # Nothing listens on port 1.
    down = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    found = samples(BrokerStateCollector(down, down, down, QUEUES))
    assert found == {"cards_broker_state_up": {(): 0.0}}

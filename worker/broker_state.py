"""What waits in Redis, read at scrape time: a prometheus-client custom Collector.

Each ``/metrics`` scrape of a worker's main process reads, in one pipelined round
trip per Redis: each queue's depth (its lists at every priority) and the age of its
oldest job (by the job's ``requested_at``), kombu's ``unacked`` hash and index, the
dead-letter count, and the migration records (by state, rows of unfinished ones).
Labels stay bounded: queue names come from settings, migration and row states are
fixed enums, and no customer, job or migration id is ever a label. Migrations are
found by a SCAN that examines at most ``scan_budget`` keys per scrape and resumes
where the last scrape stopped; at most ``max_migrations`` records are kept in view.
A Redis error gives ``cards_broker_state_up 0``, never a failed scrape.
Details: docs/observability.md.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from redis.backoff import NoBackoff
from redis.retry import Retry

from cards.deadletters import ENTRIES_KEY as DEAD_LETTERS_KEY
from cards.migration_records import KEY_PREFIX as MIGRATION_PREFIX
from cards.migration_records import MigrationRecord, MigrationState, migration_state
from cards.redis_urls import redis_client
from cards.settings import Settings

__all__ = [
    "MIGRATION_ROW_STATES",
    "BrokerStateCollector",
    "MigrationCensus",
    "message_requested_at",
    "queue_keys",
]

logger = logging.getLogger(__name__)

#: kombu's Redis transport: priority steps, the separator before a step, the unacked keys.
PRIORITY_STEPS: Final = (0, 3, 6, 9)
PRIORITY_SEP: Final = "\x06\x16"
UNACKED_KEY: Final = "unacked"
UNACKED_INDEX_KEY: Final = "unacked_index"
#: Row states of unfinished migrations (``remaining``: not finished yet).
MIGRATION_ROW_STATES: Final = ("done", "failed", "invalid", "superseded", "remaining")
SCAN_BUDGET: Final = 20_000
MAX_MIGRATIONS: Final = 1_000


def queue_keys(queue: str) -> list[str]:
    """The Redis lists of ``queue``, one per kombu priority step."""
    return [queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


def message_requested_at(raw: bytes | str | None) -> float | None:
    """The ``requested_at`` (Unix time) of a queued Celery message, if it names one. (Pure.)"""
    if raw is None:
        return None
    try:
        message = json.loads(raw)
        body: Any = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        decoded = json.loads(body)
        kwargs = decoded[1] if isinstance(decoded, list) else {}
        stamp = kwargs.get("requested_at") if isinstance(kwargs, dict) else None
        return datetime.fromisoformat(stamp).timestamp() if isinstance(stamp, str) else None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


@dataclass
class MigrationCensus:
    """Migration ids found so far, and where the bounded SCAN resumes."""

    scan_budget: int = SCAN_BUDGET
    max_migrations: int = MAX_MIGRATIONS
    cursor: int = 0
    ids: set[str] = field(default_factory=set)
    truncated: bool = False

    def discover(self, client: redis.Redis) -> None:
        """Examine at most ``scan_budget`` keys from the last cursor; remember ids found."""
        examined = 0
        while examined < self.scan_budget:
            count = min(1000, self.scan_budget - examined)
            self.cursor, keys = client.scan(self.cursor, match=f"{MIGRATION_PREFIX}*", count=count)
            examined += count
            for key in keys:
                name = key.decode() if isinstance(key, bytes) else str(key)
                if not name.endswith(":lines"):
                    self.ids.add(name.removeprefix(MIGRATION_PREFIX))
            if self.cursor == 0:
                break

    def records(self, client: redis.Redis) -> list[MigrationRecord]:
        """The known migrations' records (vanished ones are forgotten), newest kept first."""
        ids = sorted(self.ids)
        with client.pipeline(transaction=False) as pipe:
            for migration_id in ids:
                pipe.hgetall(f"{MIGRATION_PREFIX}{migration_id}")
            raws = pipe.execute()
        found = [
            MigrationRecord.from_hash(migration_id, raw)
            for migration_id, raw in zip(ids, raws, strict=True)
            if raw
        ]
        found.sort(key=lambda record: record.updated_at, reverse=True)
        self.truncated = len(found) > self.max_migrations
        kept = found[: self.max_migrations]
        self.ids = {record.id for record in kept}
        return kept


def migration_gauges(
    records: Iterable[MigrationRecord], now: float
) -> tuple[dict[str, int], dict[str, int]]:
    """Migrations by state, and rows of unfinished migrations by row state. (Pure.)"""
    by_state = {str(state): 0 for state in MigrationState}
    rows = dict.fromkeys(MIGRATION_ROW_STATES, 0)
    for record in records:
        state = migration_state(record, now)
        by_state[str(state)] += 1
        if state in (MigrationState.RUNNING, MigrationState.STALLED):
            rows["done"] += record.done
            rows["failed"] += record.failed
            rows["invalid"] += record.invalid
            rows["superseded"] += record.superseded
            rows["remaining"] += max(record.rows - record.finished, 0)
    return by_state, rows


class BrokerStateCollector(Collector):
    """Reads queues, ``unacked``, dead letters and migrations from Redis on each scrape."""

    def __init__(
        self,
        broker: redis.Redis,
        state: redis.Redis,
        results: redis.Redis,
        queues: Sequence[str],
        *,
        census: MigrationCensus | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._broker, self._state, self._results = broker, state, results
        self._queues = list(dict.fromkeys(queues))
        self._census = census or MigrationCensus()
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> BrokerStateCollector:
        """The collector of the broker, job-state and result-backend Redis the settings name.

        Callbacks ride ``settings.queue`` (worker.middleware.notify), so the two queues
        cover every queue a worker of this project reads."""
        # A scrape must answer within Prometheus's timeout even while Redis is away.
        options: dict[str, object] = {
            "socket_timeout": 2,
            "socket_connect_timeout": 2,
            "retry": Retry(NoBackoff(), 1),
        }
        master = settings.sentinel_master
        return cls(
            redis_client(settings.celery_broker_url, master, **options),
            redis_client(settings.job_state_url, master, **options),
            redis_client(settings.result_backend_url, master, **options),
            [settings.queue, settings.bulk_queue],
        )

    def describe(self) -> list[Metric]:
        return []  # read at scrape time only: never at registration

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "cards_broker_state_up", "1 if the last scrape could read the queues and stores."
        )
        try:
            families = self._read()
        except redis.RedisError as exc:
            logger.warning("metrics: cannot read the broker state: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> list[Metric]:
        now = self._clock()
        with self._broker.pipeline(transaction=False) as pipe:
            for queue in self._queues:
                for key in queue_keys(queue):
                    pipe.llen(key)
                    pipe.lindex(key, -1)  # kombu pops from the right: the oldest
            pipe.hlen(UNACKED_KEY)
            pipe.zrange(UNACKED_INDEX_KEY, 0, 0, withscores=True)
            replies = pipe.execute()
        depth = GaugeMetricFamily(
            "cards_queue_depth", "Jobs waiting in a queue (every priority).", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "cards_queue_oldest_age_seconds",
            "Age of the oldest waiting job of a queue, from its requested_at.",
            labels=["queue"],
        )
        steps = len(PRIORITY_STEPS)
        for index, queue in enumerate(self._queues):
            chunk = replies[index * 2 * steps : (index + 1) * 2 * steps]
            depth.add_metric([queue], sum(int(n) for n in chunk[0::2]))
            stamps = [s for s in map(message_requested_at, chunk[1::2]) if s is not None]
            age.add_metric([queue], max(0.0, now - min(stamps)) if stamps else 0.0)
        unacked_count, oldest = replies[-2], replies[-1]
        unacked = GaugeMetricFamily(
            "cards_unacked_messages",
            "Jobs taken by a worker and not yet acknowledged (running, or held for a retry).",
        )
        unacked.add_metric([], int(unacked_count))
        unacked_age = GaugeMetricFamily(
            "cards_unacked_oldest_age_seconds",
            "Time since the oldest unacknowledged job was taken.",
        )
        unacked_age.add_metric([], max(0.0, now - float(oldest[0][1])) if oldest else 0.0)

        letters = GaugeMetricFamily("cards_dead_letters", "Dead letters kept for replay.")
        letters.add_metric([], int(self._state.hlen(DEAD_LETTERS_KEY)))

        self._census.discover(self._results)
        by_state, rows = migration_gauges(self._census.records(self._results), now)
        migrations = GaugeMetricFamily(
            "cards_migrations", "Migration records in Redis, by state.", labels=["state"]
        )
        for state, count in by_state.items():
            migrations.add_metric([state], count)
        migration_rows = GaugeMetricFamily(
            "cards_migration_rows",
            "Rows of running or stalled migrations, by row state.",
            labels=["state"],
        )
        for state, count in rows.items():
            migration_rows.add_metric([state], count)
        truncated = GaugeMetricFamily(
            "cards_migrations_truncated",
            "1 if more migration records exist than the metrics keep in view.",
        )
        truncated.add_metric([], int(self._census.truncated))
        return [depth, age, unacked, unacked_age, letters, migrations, migration_rows, truncated]

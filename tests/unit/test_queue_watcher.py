"""The queue watcher through a Redis outage: one warning when it starts failing, one line
when it is back, however many retries in between (a fake pool; no Redis)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
import redis

from cards.transport import queue_watcher
from cards.transport.queue_watcher import QueueWatcher

FAILURES = 6


class Connection:
    """Answers every BLMOVE with "the wait timed out"; ``answered`` once a second one is
    sent (the first answer fully handled)."""

    def __init__(self, answered: threading.Event) -> None:
        self.answered = answered
        self.sent = 0

    def send_command(self, *args: Any) -> None:
        self.sent += 1
        if self.sent == 2:
            self.answered.set()

    def can_read(self, timeout: float) -> bool:
        return True

    def read_response(self) -> None:
        return None

    def disconnect(self) -> None:
        pass


class Pool:
    """Refuses the first FAILURES connections, as a Redis that is down does."""

    connection_kwargs: dict[str, Any] = {}  # noqa: RUF012 (read by redis.Redis)

    def __init__(self) -> None:
        self.attempts = 0
        self.answered = threading.Event()

    def get_connection(self, *args: Any) -> Connection:
        self.attempts += 1
        if self.attempts <= FAILURES:
            raise redis.ConnectionError("Connection refused")
        return Connection(self.answered)

    def release(self, connection: Connection) -> None:
        pass

    def disconnect(self) -> None:
        pass


def test_an_outage_is_logged_once_and_its_end_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue_watcher, "RETRY_SECONDS", 0.001)
    pool = Pool()
    watcher = QueueWatcher(pool, lambda client, key: None, timeout=0.05)
    with caplog.at_level(logging.INFO, logger=queue_watcher.__name__):
        watcher.watch(["cards"])
        assert pool.answered.wait(10), "the watcher never got back"
        watcher.stop()
    lines = [record.getMessage() for record in caplog.records]
    assert pool.attempts > FAILURES
    assert len(lines) == 2, lines
    assert lines[0].startswith("queue watcher on 'cards': ConnectionError; retrying every")
    assert lines[1] == "queue watcher on 'cards': reconnected"

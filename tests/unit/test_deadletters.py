"""The dead-letter store and which envelopes go there."""

from __future__ import annotations

import fakeredis
import pytest

from cards.deadletters import DeadLetter, DeadLetterStore, is_dead_letter
from cards.envelope import ErrorKind, failure, success


@pytest.mark.parametrize(
    ("envelope", "dead"),
    [
        (failure("Stripe unavailable, gave up", ErrorKind.STRIPE_UNAVAILABLE), True),
        (failure("no such customer", ErrorKind.NO_SUCH_CUSTOMER), False),
        (failure("invalid job: …", ErrorKind.INVALID_JOB), False),
        (failure("worker is misconfigured", ErrorKind.MISCONFIGURED), True),
        (success({"id": "cus_1"}), False),
    ],
)
def test_only_failures_from_outside_the_job_are_dead_letters(envelope: object, dead: bool) -> None:
    assert is_dead_letter(envelope) is dead  # type: ignore[arg-type]


def letter(job_id: str, at: float) -> DeadLetter:
    return DeadLetter(
        job_id,
        {"userId": "cus_1", "default_source": "card_1", "job_id": job_id},
        failure("Stripe unavailable, gave up after 8 attempts", ErrorKind.STRIPE_UNAVAILABLE),
        at,
    )


def store_of(*, ttl_seconds: int = 3600, max_entries: int = 100) -> DeadLetterStore:
    return DeadLetterStore(fakeredis.FakeRedis(), ttl_seconds=ttl_seconds, max_entries=max_entries)


def test_store_lists_oldest_first_and_removes() -> None:
    store = store_of()
    store.add(letter("b", 2.0))
    store.add(letter("a", 1.0))
    store.add(letter("c", 3.0))
    assert [x.job_id for x in store.oldest()] == ["a", "b", "c"]
    assert [x.job_id for x in store.oldest(limit=2)] == ["a", "b"]
    assert store.get(["c", "zz"]) == [letter("c", 3.0)]
    assert store.remove(["b", "zz"]) == 1
    assert len(store) == 2
    assert store.purge() == 2
    assert store.oldest() == []


def test_dead_letters_expire_and_are_capped() -> None:
    store = store_of(ttl_seconds=3600, max_entries=3)
    store.add(letter("old", 1000.0))
    store.add(letter("a", 5000.0))  # "old" failed more than an hour before: dropped
    assert [x.job_id for x in store.oldest()] == ["a"]
    for number, at in enumerate([5001.0, 5002.0, 5003.0]):
        store.add(letter(f"b{number}", at))
    assert [x.job_id for x in store.oldest()] == ["b0", "b1", "b2"]  # the oldest beyond 3 went
    assert len(store) == 3
    ttl = store._redis.ttl("cards:dlq:entries")
    assert 0 < ttl <= 3600

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


def test_store_lists_oldest_first_and_removes() -> None:
    store = DeadLetterStore(fakeredis.FakeRedis())
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

"""An explicit ``-P prefork`` is honoured over the configured threads pool, and a prefork
pool whose size nobody chose gets one process per core, not 64."""

from __future__ import annotations

import pytest
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.concurrency.thread import TaskPool as ThreadPool

from worker.pool import concurrency_given, pool_given, unsized_prefork

CELERY = ["celery", "-A", "worker", "worker", "-Q", "cards.bulk"]


@pytest.mark.parametrize(
    ("extra", "given"),
    [
        ([], False),
        (["-c", "4"], True),
        (["-c4"], True),
        (["--concurrency", "4"], True),
        (["--concurrency=4"], True),
        (["-P", "prefork"], False),
        (["--config", "x"], False),
    ],
)
def test_concurrency_given(extra: list[str], given: bool) -> None:
    assert concurrency_given([*CELERY, *extra]) is given


@pytest.mark.parametrize(
    ("pool", "extra", "environ", "unsized"),
    [
        (PreforkPool, ["-P", "prefork"], {}, True),
        ("prefork", [], {}, True),
        (PreforkPool, ["-P", "prefork", "-c", "4"], {}, False),
        (PreforkPool, ["-P", "prefork"], {"CARDS_WORKER_CONCURRENCY": "8"}, False),
        (ThreadPool, [], {}, False),
        ("threads", [], {}, False),
    ],
)
def test_unsized_prefork(
    pool: object, extra: list[str], environ: dict[str, str], unsized: bool
) -> None:
    assert unsized_prefork(pool, [*CELERY, *extra], environ) is unsized


@pytest.mark.parametrize(
    ("extra", "pool"),
    [
        ([], None),
        (["-P", "prefork"], "prefork"),
        (["-Pprefork"], "prefork"),
        (["--pool", "processes"], "processes"),
        (["--pool=threads"], "threads"),
        (["-c", "4"], None),
    ],
)
def test_pool_given(extra: list[str], pool: str | None) -> None:
    assert pool_given([*CELERY, *extra]) == pool

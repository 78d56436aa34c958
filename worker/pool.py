"""The size of a worker's pool when its command line gives none.

``CARDS_WORKER_CONCURRENCY`` (64) sizes the threads pool the plain command
runs: threads that wait for Stripe. Celery applies ``worker_concurrency`` to
whatever pool runs, so ``-P prefork`` without ``-c`` (a bulk worker started
by hand) would fork 64 processes, about 85 MB each. A prefork pool whose size
nobody chose gets one process per core instead, Celery's own default.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from celery import signals

__all__ = ["concurrency_given", "unsized_prefork"]

CONCURRENCY_ENV = "CARDS_WORKER_CONCURRENCY"


def concurrency_given(argv: Sequence[str]) -> bool:
    """Does this command line set the pool size (``-c N``, ``-cN``, ``--concurrency[=]N``)?"""
    return any(arg == "--concurrency" or arg.startswith(("--concurrency=", "-c")) for arg in argv)


def unsized_prefork(pool: object, argv: Sequence[str], environ: Mapping[str, str]) -> bool:
    """A prefork pool whose size comes from neither the command line nor the environment."""
    name = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    return "prefork" in str(name) and not concurrency_given(argv) and CONCURRENCY_ENV not in environ


@signals.worker_init.connect
def _one_process_per_core(sender: Any = None, **_: Any) -> None:
    if sender is not None and unsized_prefork(sender.pool_cls, sys.argv, os.environ):
        sender.concurrency = os.cpu_count() or 1

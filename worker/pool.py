"""The pool a worker runs when its command line names none, or names prefork.

``CARDS_WORKER_POOL`` / ``CARDS_WORKER_CONCURRENCY`` (threads, 64) make the
plain command run threads that wait for Stripe. At ``worker_init`` an explicit
``-P prefork`` is honoured (Celery would read it as "the default" and run the
configured pool), and a prefork pool whose size nobody chose gets one process
per core rather than ``worker_concurrency``. Details: docs/worker.md.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from celery import signals

__all__ = ["concurrency_given", "pool_given", "unsized_prefork"]

CONCURRENCY_ENV = "CARDS_WORKER_CONCURRENCY"
PREFORK_NAMES = frozenset({"prefork", "processes"})


def pool_given(argv: Sequence[str]) -> str | None:
    """The pool this command line names (``-P X``, ``-PX``, ``--pool X``, ``--pool=X``)."""
    for index, arg in enumerate(argv):
        if arg in ("-P", "--pool"):
            return argv[index + 1] if index + 1 < len(argv) else None
        if arg.startswith("--pool="):
            return arg.removeprefix("--pool=")
        if arg.startswith("-P") and len(arg) > 2:
            return arg[2:]
    return None


def concurrency_given(argv: Sequence[str]) -> bool:
    """Does this command line set the pool size (``-c N``, ``-cN``, ``--concurrency[=]N``)?"""
    return any(arg == "--concurrency" or arg.startswith(("--concurrency=", "-c")) for arg in argv)


def unsized_prefork(pool: object, argv: Sequence[str], environ: Mapping[str, str]) -> bool:
    """A prefork pool whose size comes from neither the command line nor the environment."""
    name = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    return "prefork" in str(name) and not concurrency_given(argv) and CONCURRENCY_ENV not in environ


@signals.worker_init.connect
def _pool_as_asked(sender: Any = None, **_: Any) -> None:
    if sender is None:
        return
    if pool_given(sys.argv) in PREFORK_NAMES:
        sender.pool_cls = "prefork"
    if unsized_prefork(sender.pool_cls, sys.argv, os.environ):
        sender.concurrency = os.cpu_count() or 1

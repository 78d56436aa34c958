"""Objects that each worker process builds for itself, after the pool forks.

A Stripe HTTP client or a Redis connection pool created before ``fork`` would
share its sockets between pool processes. :func:`per_process` builds the
object on first use in each process and reuses it for every later job there.
Under the threads pool many jobs ask at once: the first builds, the others
wait for it (one client per process, not one per racing thread).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

__all__ = ["per_process"]

T = TypeVar("T")


def per_process(factory: Callable[[], T]) -> Callable[[], T]:
    """``factory()``, called once per process id."""
    built: dict[int, T] = {}
    lock = threading.Lock()

    @wraps(factory)
    def get() -> T:
        pid = os.getpid()
        try:
            return built[pid]
        except KeyError:
            pass
        with lock:
            if pid not in built:
                built.clear()
                built[pid] = factory()
            return built[pid]

    return get

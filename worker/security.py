"""Serialization the worker accepts: JSON only, or JSON inside Celery's signed ``auth``.

Pickle from the network is code execution. Celery's defaults are safe today,
but one line in a config file would undo that, so the worker checks its
configuration when it starts and refuses to run with anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from celery.exceptions import ImproperlyConfigured

__all__ = ["assert_safe_serialization", "unsafe_serialization"]

#: Content types a worker may decode: JSON, and JSON signed by the ``auth`` serializer.
SAFE_CONTENT: Final = frozenset({"json", "application/json", "auth", "application/data"})
SAFE_SERIALIZERS: Final = frozenset({"json", "auth"})


def unsafe_serialization(conf: Mapping[str, Any]) -> list[str]:
    """Every way this configuration would accept or send something other than JSON. (Pure.)"""
    problems: list[str] = []
    for name in ("accept_content", "result_accept_content"):
        allowed = conf.get(name)
        if allowed is None:
            continue
        extra = sorted(set(allowed) - SAFE_CONTENT)
        if extra:
            problems.append(f"{name} allows {', '.join(extra)}")
    for name in ("task_serializer", "result_serializer"):
        if conf.get(name) not in SAFE_SERIALIZERS:
            problems.append(f"{name} is {conf.get(name)!r}")
    return problems


def assert_safe_serialization(conf: Mapping[str, Any]) -> None:
    problems = unsafe_serialization(conf)
    if problems:
        raise ImproperlyConfigured(
            "refusing to start: only JSON may be accepted (" + "; ".join(problems) + ")"
        )

"""uvicorn's logging configuration for the gateway: its access log without query strings.

An API key or a customer id sent in a query string must never land in a log,
so every access log line drops everything from the ``?`` on.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

__all__ = ["log_config"]


class _NoQueryStrings(logging.Filter):
    """Drop the query string from uvicorn's access log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging configuration, its access log without query strings."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["no_query"] = {"()": _NoQueryStrings}
    config["handlers"]["access"]["filters"] = ["no_query"]
    return config

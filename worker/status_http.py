"""The worker main process's HTTP server: ``/metrics``, ``/livez`` and ``/readyz``.

At ``worker_init`` (main process, before the pool forks) and only when
``CARDS_METRICS_PORT`` is set, it makes metric values file-backed
(:func:`worker.metrics.count_in_files`), builds a registry of the pool's summed
metrics plus :class:`worker.broker_state.BrokerStateCollector`, and serves it
with the probes of :mod:`worker.probes` on one daemon thread. Pool processes and
sibling worker processes (:mod:`worker.siblings`) count there but never serve.
A port already taken is logged, not fatal: the worker still works.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from celery import signals
from prometheus_client import CollectorRegistry, make_wsgi_app, multiprocess
from prometheus_client.exposition import ThreadingWSGIServer

from cards.settings import get_settings
from worker.broker_state import BrokerStateCollector
from worker.metrics import count_in_files
from worker.probes import status_app
from worker.siblings import is_sibling

__all__ = ["serve_status"]

logger = logging.getLogger(__name__)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes come every few seconds: no access log line for each."""


def serve_status(address: str, port: int, registry: CollectorRegistry) -> None:
    """Serve ``registry`` and the probes on ``address``:``port`` from a daemon thread."""

    class StatusServer(ThreadingWSGIServer):
        address_family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0][0]

    server: WSGIServer = make_server(
        address, port, status_app(make_wsgi_app(registry)), StatusServer, _QuietHandler
    )
    threading.Thread(target=server.serve_forever, name="cards-status-http", daemon=True).start()


@signals.worker_init.connect
def _serve_on_worker_init(**_: Any) -> None:
    settings = get_settings()
    if not settings.metrics_port:
        return
    count_in_files()
    if is_sibling():
        return  # the main process serves every process's metrics
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(BrokerStateCollector.from_settings(settings))
    try:
        serve_status(settings.metrics_address, settings.metrics_port, registry)
    except OSError as exc:
        # Metrics are an aid, not a reason to refuse jobs.
        logger.error("metrics: cannot serve on port %s: %s", settings.metrics_port, exc)
        return
    logger.info(
        "metrics: serving /metrics, /livez and /readyz on %s:%s",
        settings.metrics_address,
        settings.metrics_port,
    )

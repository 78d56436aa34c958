"""The migration page: ``GET /migrations`` (list) and ``/migrations/{id}`` (one migration, live).

The page (``migrations.html`` beside this module, plain HTML and a little JS)
holds no data: its script asks the JSON routes ``/api/migrations`` and
``/api/migrations/{id}`` (counts, state, rate, ETA) every second, and downloads
the report from ``/api/migrations/{id}/report``. Those routes need a key with
the ``admin`` scope (migrations belong to no tenant), sent as a bearer header
from a key the operator types into the page (kept in the tab's session storage,
never in a URL). :func:`migration_view` (pure) is the JSON of one record.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from importlib.resources import files
from pathlib import Path
from typing import Any, Final

from celery import Celery
from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from cards.jobs import check_job_id
from cards.migration_records import MigrationRecord, MigrationState, migration_state
from cards.results import ResultBackend
from producers.http.auth import Caller, Scope, scoped
from producers.http.errors import NOT_FOUND, GatewayError, checked
from producers.migrate.store import MigrationStore

__all__ = ["PAGE", "migration_view", "migrations_router"]

#: The page, read once: the same document for the list and for one migration.
PAGE: Final = files("producers.http").joinpath("migrations.html").read_text(encoding="utf-8")
#: The page may run only its own script and reach only this origin.
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def migration_view(record: MigrationRecord, now: float) -> dict[str, Any]:
    """One migration as the page shows it: counts, state, rows per second, ETA. (Pure.)

    The rate is the average since the migration began (until its last change); the
    ETA is the remaining rows at that rate, None while unknown or once finished.
    """
    view = record.as_dict()
    state = migration_state(record, now)
    end = record.completed_at or record.updated_at
    elapsed = end - record.created_at if record.created_at else 0.0
    rate = record.finished / elapsed if elapsed > 0 and record.finished else None
    eta = None
    if state is MigrationState.RUNNING and rate:
        eta = view["remaining"] / rate
    view.update(
        state=str(state),
        rate_per_second=round(rate, 2) if rate is not None else None,
        eta_seconds=round(eta, 1) if eta is not None else None,
        report_url=f"/api/migrations/{record.id}/report",
    )
    return view


def _ok(message: str, data: Any) -> JSONResponse:
    return JSONResponse({"status": True, "message": message, "data": data})


def migrations_router(
    celery: Celery, require_api_key: Callable[..., Awaitable[Caller]]
) -> APIRouter:
    """The page routes (no key: they hold no data) and the JSON routes (``admin`` key)."""
    store = MigrationStore(ResultBackend(celery).client)
    router = APIRouter()
    may_read = scoped(require_api_key, Scope.ADMIN)

    def existing(migration_id: str) -> MigrationRecord:
        checked(lambda: check_job_id(migration_id, "migration id"))
        record = store.get(migration_id)
        if record is None:
            raise GatewayError(NOT_FOUND, f"no migration {migration_id} (never started or expired)")
        return record

    @router.get("/migrations", include_in_schema=False)
    @router.get("/migrations/{migration_id}", include_in_schema=False)
    def page(migration_id: str | None = None) -> HTMLResponse:
        return HTMLResponse(PAGE, headers=_PAGE_HEADERS)

    @router.get("/api/migrations", include_in_schema=False)
    def list_migrations(caller: Caller = Depends(may_read)) -> JSONResponse:  # noqa: B008
        now = time.time()
        views = [migration_view(record, now) for record in store.all()]
        return _ok(f"{len(views)} migrations", views)

    @router.get("/api/migrations/{migration_id}", include_in_schema=False)
    def one_migration(
        migration_id: str,
        caller: Caller = Depends(may_read),  # noqa: B008
    ) -> JSONResponse:
        view = migration_view(existing(migration_id), time.time())
        return _ok(f"migration is {view['state']}", view)

    @router.get("/api/migrations/{migration_id}/report", include_in_schema=False)
    def report(
        migration_id: str,
        caller: Caller = Depends(may_read),  # noqa: B008
    ) -> FileResponse:
        path = Path(existing(migration_id).report)
        if not path.is_file():
            raise GatewayError(NOT_FOUND, "the migration's report is not on this gateway's host")
        return FileResponse(path, media_type="text/csv", filename=f"{migration_id}-report.csv")

    return router

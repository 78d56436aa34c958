"""The migration page's JSON view (pure, table-tested) and who may read it."""

from __future__ import annotations

from typing import Any

import pytest

from cards.migration_records import STALL_SECONDS, MigrationRecord
from producers.http.app import create_app
from producers.http.migrations import PAGE, migration_view
from tests.unit.test_gateway import KEY, call, settings, unreachable_app

ADMIN_KEY = "ops-admin-key-0123456789abc"


def record(**overrides: Any) -> MigrationRecord:
    base: dict[str, Any] = {
        "id": "m1",
        "file": "/data/cards.csv",
        "format": "csv",
        "sha256": "ab",
        "report": "/data/cards.csv.report.csv",
        "rows": 100,
        "valid": 98,
        "invalid": 2,
        "created_at": 1000.0,
        "updated_at": 1010.0,
    }
    return MigrationRecord(**{**base, **overrides})


@pytest.mark.parametrize(
    ("overrides", "now", "state", "rate", "eta"),
    [
        # 40 rows finished in 10 s: 4 rows/s, 60 rows left: 15 s.
        ({"done": 37, "failed": 1}, 1011.0, "running", 4.0, 15.0),
        ({}, 1011.0, "running", 0.2, 490.0),  # only the two invalid rows so far
        ({"invalid": 0}, 1011.0, "running", None, None),  # nothing finished: no rate yet
        ({"done": 37}, 1010.0 + STALL_SECONDS + 1, "stalled", 3.9, None),
        ({"done": 37, "interrupted_at": 1011.0}, 1011.0, "stalled", 3.9, None),
        ({"done": 98, "completed_at": 1020.0}, 1030.0, "failed", 5.0, None),  # invalid rows
        ({"done": 100, "invalid": 0, "completed_at": 1020.0}, 1030.0, "done", 5.0, None),
    ],
)
def test_migration_view(
    overrides: dict[str, Any], now: float, state: str, rate: float | None, eta: float | None
) -> None:
    view = migration_view(record(**overrides), now)
    assert (view["state"], view["rate_per_second"], view["eta_seconds"]) == (state, rate, eta)
    assert view["report_url"] == "/api/migrations/m1/report"
    assert view["remaining"] == view["rows"] - view["finished"]


@pytest.fixture(scope="module")
def gateway() -> Any:
    return create_app(settings(gateway_api_keys=f"{KEY},ops:admin:{ADMIN_KEY}"), unreachable_app())


@pytest.mark.parametrize("path", ["/migrations", "/migrations/m1"])
def test_the_page_is_served_without_a_key_and_holds_no_data(gateway: Any, path: str) -> None:
    response = call(gateway, "GET", path)
    assert response.status_code == 200
    assert response.text == PAGE
    assert response.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "path", ["/api/migrations", "/api/migrations/m1", "/api/migrations/m1/report"]
)
def test_the_json_needs_an_admin_key(gateway: Any, path: str) -> None:
    assert call(gateway, "GET", path).status_code == 401
    bare = {"Authorization": f"Bearer {KEY}"}
    response = call(gateway, "GET", path, headers=bare)
    assert response.status_code == 403
    assert response.json()["message"] == "this API key does not hold the admin scope"


def test_the_key_is_sent_as_a_header_and_kept_out_of_urls() -> None:
    assert 'Authorization: "Bearer " + key()' in PAGE
    assert "sessionStorage" in PAGE and "localStorage" not in PAGE
    assert "?key=" not in PAGE and "token=" not in PAGE

"""The migration page in a real headless browser, during a real migration.

Debian's chromium (``.ci/run`` installs it), driven by Playwright through its
own executable, loads ``/migrations/{id}`` from ``cards gateway``, takes the
admin key from its form, and polls the JSON while ``cards migrate run`` sends
rows to a real bulk worker and the emulator (slowed so the run takes seconds).
The counts it shows must advance, then stop at the total; a screenshot is saved
in the test's directory (and, with ``CARDS_SCREENSHOT_TO_DOCS=1``, to docs/).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.gateway_process import GatewayProcess, run_gateway
from harness.processes import BIN, BULK_POOL, run_redis, run_worker, wait_for
from stripe_emulator.process import EmulatorProcess, run_emulator
from tests.integration.conftest import API_KEY, worker_env

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ADMIN_KEY = "page-admin-key-0123456789abcdef"
READ_KEY = "page-read-key-0123456789abcdefg"
ROWS = 36
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "migration-page.png"


@pytest.fixture(scope="module")
def stack(logs_dir: Path) -> Iterator[tuple[str, EmulatorProcess, GatewayProcess]]:
    """A private Redis, an emulator answering in 150 ms, a bulk worker and the gateway."""
    with (
        run_redis() as redis_server,
        run_emulator(api_key=API_KEY, latency_ms=150) as emulator,
    ):
        env = worker_env(redis_server.url(), emulator.url)
        with (
            run_worker(
                env,
                logs_dir / "page-worker.log",
                concurrency=2,
                name="page",
                extra_args=("-Q", "cards.bulk", *BULK_POOL),
            ),
            run_gateway(
                {**env, "CARDS_GATEWAY_API_KEYS": f"ops:admin:{ADMIN_KEY},shop:read:{READ_KEY}"},
                logs_dir / "page-gateway.log",
            ) as gateway,
        ):
            yield redis_server.url(), emulator, gateway


def _start_migration(redis_url: str, source: Path, migration_id: str) -> subprocess.Popen[str]:
    command = [str(BIN / "cards"), "migrate", "run", str(source), "--id", migration_id]
    return subprocess.Popen(
        [*command, "--quiet", "--window", "3"],
        env={**os.environ, "CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_page_shows_a_migration_advance_and_finish(
    stack: tuple[str, EmulatorProcess, GatewayProcess], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    redis_url, emulator, gateway = stack
    customers = emulator.admin.seed(ROWS, cards_per_customer=2)
    source = tmp_path / "cards.csv"
    source.write_text(
        "userId,default_source\n" + "".join(f"{c['id']},{c['cards'][1]}\n" for c in customers),
        encoding="utf-8",
    )
    migration_id = "page-test-1"
    migration: subprocess.Popen[str] | None = None
    seen: list[int] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1000, "height": 760})
            page.goto(f"{gateway.url}/migrations/{migration_id}")
            assert "Enter an API key" in page.inner_text("#error")
            page.fill("#key", ADMIN_KEY)
            page.click("button[type=submit]")
            # The page polls a migration that does not exist yet; it starts only now,
            # so that a slow browser start cannot miss it running.
            migration = _start_migration(redis_url, source, migration_id)
            page.wait_for_selector("#one:not([hidden])")

            running = tmp_path / "migration-page-running.png"

            def done_count() -> int:
                text = page.inner_text("[data-count=done]").replace(",", "")
                if not text.isdigit():
                    return -1
                if not seen or seen[-1] != int(text):
                    seen.append(int(text))
                if 0 < int(text) < ROWS and not running.exists():
                    page.screenshot(path=str(running), full_page=True, animations="disabled")
                return int(text)

            wait_for(lambda: done_count() == ROWS, 120, "the page to show every row done")
            page.wait_for_function("document.getElementById('state').textContent === 'done'")
            assert page.inner_text("[data-count=rows]") == str(ROWS)
            assert page.inner_text("#eta") == "finished"
            shot = tmp_path / "migration-page.png"
            page.screenshot(path=str(shot), full_page=True, animations="disabled")
            assert shot.stat().st_size > 0 and running.stat().st_size > 0
            if os.environ.get("CARDS_SCREENSHOT_TO_DOCS") == "1":
                shutil.copyfile(running, DOCS_SCREENSHOT)
            # The key never went into a URL: the page's address is as it was typed.
            assert page.url == f"{gateway.url}/migrations/{migration_id}"

            # The list, with the key this tab already holds, links to the migration.
            page.goto(f"{gateway.url}/migrations")
            page.wait_for_selector(f"a[href='/migrations/{migration_id}']")
            browser.close()
    finally:
        err = "the migration was never started"
        if migration is not None:
            _, err = migration.communicate(timeout=120)
    assert migration is not None and migration.returncode == 0, err
    # Counts advanced while the page watched: seen between none and all, in order.
    assert len(seen) >= 3 and seen == sorted(seen), seen
    assert any(0 < count < ROWS for count in seen), seen


def test_the_json_twin_and_the_report_need_an_admin_key(
    stack: tuple[str, EmulatorProcess, GatewayProcess], tmp_path: Path
) -> None:
    redis_url, emulator, gateway = stack
    customers = emulator.admin.seed(2, cards_per_customer=2)
    source = tmp_path / "two.csv"
    source.write_text(
        "userId,default_source\n" + "".join(f"{c['id']},{c['cards'][1]}\n" for c in customers),
        encoding="utf-8",
    )
    run = _start_migration(redis_url, source, "page-test-2")
    _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err

    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    url = f"{gateway.url}/api/migrations/page-test-2"
    view = httpx.get(url, headers=admin).json()
    assert view["status"] is True
    data = view["data"]
    assert (data["rows"], data["done"], data["state"], data["eta_seconds"]) == (2, 2, "done", None)
    assert data["rate_per_second"] > 0
    listed = httpx.get(f"{gateway.url}/api/migrations", headers=admin).json()["data"]
    assert "page-test-2" in [m["id"] for m in listed]

    report = httpx.get(gateway.url + data["report_url"], headers=admin)
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/csv")
    assert report.text.splitlines()[0].startswith("line,")
    assert len(report.text.splitlines()) == 3

    assert httpx.get(url).status_code == 401
    reader = {"Authorization": f"Bearer {READ_KEY}"}
    assert httpx.get(url, headers=reader).status_code == 403
    missing = httpx.get(f"{gateway.url}/api/migrations/no-such-one", headers=admin)
    assert missing.status_code == 404 and missing.json()["status"] is False
    assert httpx.get(f"{gateway.url}/api/migrations/bad id!", headers=admin).status_code == 400

"""A real headless Chromium asks a question about a PostgreSQL database, sees the chart and downloads the CSV.

    .venv/bin/pytest tests/webui/browser -m browser
    T2SQL_SCREENSHOT_DIR=docs/screenshots .venv/bin/pytest tests/webui/browser -m browser -k postgres   # docs image

Needs Debian's chromium at /usr/bin/chromium and PostgreSQL (``apt-get install -y chromium postgresql``).
"""

from __future__ import annotations

import csv
import os
import threading
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed at /usr/bin/chromium"),
]
sync_api = pytest.importorskip("playwright.sync_api")

QUESTION = "Report the number of students in each classroom."


@pytest.fixture(scope="module")
def server(tmp_path_factory, postgres_server):
    """The app under waitress with one PostgreSQL connection ("school") and the lookup translator."""
    from waitress import create_server

    from t2sql.databases.connections import ConnectionSpec, save_connections
    from t2sql.databases.load import load_sqlite
    from webui import create_app
    from webui.testing import SPIDER_SAMPLE, LookupTranslator, app_settings, make_registry

    mp = pytest.MonkeyPatch()
    mp.setenv("T2SQL_TEST_PG_PASSWORD", postgres_server.password)
    load_sqlite(SPIDER_SAMPLE / "database" / "student_1" / "student_1.sqlite", postgres_server.url("browser_school"),
                create=True, replace=True)
    tmp = tmp_path_factory.mktemp("browser-pg")
    save_connections(tmp / "connections.yaml", [ConnectionSpec(
        "school", postgres_server.url("browser_school", with_password=False), password_env="T2SQL_TEST_PG_PASSWORD")])
    make_registry(tmp / "runs", with_model=False)
    app = create_app(app_settings(tmp, WTF_CSRF_ENABLED=True, CONNECTIONS_FILE=str(tmp / "connections.yaml"),
                                  TRANSLATOR_FACTORY=LookupTranslator.factory()))
    srv = create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.effective_port}", postgres_server.password
    srv.close()
    thread.join(timeout=5)
    app.extensions["t2sql.answers"].catalog._drop("school")
    mp.undo()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def test_a_postgres_answer_shows_a_chart_and_downloads_a_csv(browser, server, tmp_path):
    base, password = server
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(f"{base}/")
        page.select_option("#database", "school")
        page.fill("#question", QUESTION)
        page.click("#ask-button")
        page.wait_for_url(f"{base}/ask/*")
        assert page.locator("#dialect").inner_text() == "postgres"
        chart = page.locator("#result-chart svg")
        chart.wait_for()
        assert chart.locator("rect.bar").count() == 12
        box = chart.bounding_box()
        assert box and box["width"] > 200 and box["height"] > 100  # drawn, not hidden
        if os.environ.get("T2SQL_SCREENSHOT_DIR"):
            page.screenshot(path=str(Path(os.environ["T2SQL_SCREENSHOT_DIR"]) / "chart.png"), full_page=True)
        with page.expect_download() as info:
            page.click("#csv-download")
        path = tmp_path / "rows.csv"
        info.value.save_as(path)
        rows = list(csv.reader(path.open()))
        assert rows[0] == ["classroom", "count"] and len(rows) == 13
        assert sum(int(r[1]) for r in rows[1:]) == 60
        assert password not in page.content()
        assert not [e for e in errors if "Content Security Policy" in e]  # the inline SVG needs no exception
    finally:
        context.close()

"""Fixtures for the dashboard: settings on a real SQLite file, a served dashboard, a browser."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashboard.app import DashboardServer
from dashboard.settings import DashboardSettings

ADMIN_USER = "admin"
ADMIN_PASSWORD = "correct horse battery staple"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def make_settings(tmp: Path, site: str = "site-1", **overrides: Any) -> DashboardSettings:
    """Dashboard settings with a fresh SQLite file and an admin password file under ``tmp``."""
    pw = tmp / "admin_password"
    pw.write_text(ADMIN_PASSWORD + "\n")
    pw.chmod(0o600)
    values: dict[str, Any] = {
        "site": site, "db_path": tmp / "dashboard.db", "admin_user": ADMIN_USER,
        "admin_password_file": pw, "http_port": 0,
    }
    values.update(overrides)
    return DashboardSettings(**values)


def csrf_of(html: str) -> str:
    """The CSRF token of the first form in ``html``."""
    m = CSRF_RE.search(html)
    assert m, "no csrf field in the page"
    return m.group(1)


@pytest.fixture
def dash_settings(tmp_path: Path) -> DashboardSettings:
    """Settings for an HTTP-only dashboard (no broker) on a fresh database."""
    return make_settings(tmp_path)


@pytest.fixture
def dashboard_server(site: Any, broker: Any, tmp_path: Path) -> Iterator[DashboardServer]:
    """The dashboard served on a free port, its ingest subscribed to the real site broker."""
    settings = make_settings(
        tmp_path, site=site.site, mqtt_host="localhost", mqtt_port=broker.port,
        mqtt_ca=site.ca_cert, mqtt_cert=site.dashboard.cert, mqtt_key=site.dashboard.key)
    server = DashboardServer(settings)
    server.start()
    try:
        assert server.ingest is not None and server.ingest.wait_connected(10.0), \
            "dashboard ingest did not connect to the broker"
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Debian's chromium driven by Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_page(chromium: Any) -> Iterator[Any]:
    """A fresh page in its own browser context (own cookies), closed after the test."""
    context = chromium.new_context(viewport={"width": 1280, "height": 800}, locale="fr-FR")
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def browser_login(page: Any, base_url: str, user: str = ADMIN_USER,
                  password: str = ADMIN_PASSWORD) -> None:
    """Log in through the real form and wait for the floor page's live stream."""
    page.goto(base_url + "/")
    page.wait_for_url("**/login")
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(base_url + "/")
    page.wait_for_selector("body[data-stream-ready='1']", timeout=10_000)


@pytest.fixture
def logged_in_page(browser_page: Any, dashboard_server: DashboardServer) -> Any:
    """The floor page of ``dashboard_server``, logged in as the admin and streaming."""
    browser_login(browser_page, dashboard_server.url)
    return browser_page

"""A session's idle timeout against the open pages: their background traffic (the live stream,
periodic fetches, self-reloads) does not keep it alive, a user's act does, and an open page goes
to the login page once it is over."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashboard import auth
from dashboard import db as store
from dashboard.app import DashboardServer
from dashboard.routes.stream import _scope
from dashboard.settings import DashboardSettings
from tests._fixtures_dashboard import (
    USER_PASSWORD,
    browser_login,
    client,
    csrf_header,
    login_as,
    make_settings,
    seed_org,
)

IDLE_S = 4.0
"""The browser tests' idle timeout: longer than any step of a login, short to wait out."""


def _last_seen(settings: DashboardSettings) -> float:
    """The last_seen_ts of the only full session."""
    db = store.open_db(settings.db_path)
    try:
        [(ts,)] = db.conn.execute("SELECT last_seen_ts FROM sessions WHERE stage = 'ok'").fetchall()
        return float(ts)
    finally:
        db.conn.close()


def _set_last_seen(settings: DashboardSettings, ts: float) -> None:
    db = store.open_db(settings.db_path)
    try:
        with db.conn:
            db.conn.execute("UPDATE sessions SET last_seen_ts = ?", (ts,))
    finally:
        db.conn.close()


def test_background_reads_do_not_extend_the_idle_deadline_a_users_act_does(
        org: tuple[DashboardSettings, dict[str, Any]]) -> None:
    """The floor's reads (its stats every 2 s, its seats, the stream's session check every 5 s) and
    the IT page's own reload leave the session's last activity where it was; a page navigated to,
    a form or the activity a page reports (a key, a click) start the idle timer again."""
    settings, data = org
    with client(settings) as c:
        login_as(c, "sup-a", data)
        csrf = csrf_header(c)
        token = c.cookies.get(auth.session_cookie_name(True))
        earlier = time.time() - 100.0
        _set_last_seen(settings, earlier)
        for path in ("/api/ingest/stats", "/api/floor", "/api/boxes"):
            assert c.get(path).status_code == 200, path
        assert _scope(settings.db_path, "sup-a", token, settings.session_idle_s) is not None
        reload = {"sec-fetch-mode": "navigate", "sec-fetch-dest": "document"}
        assert c.get("/campaigns", headers=reload).status_code == 200
        assert _last_seen(settings) == earlier
        left = c.get("/api/session").json()  # when the page is to ask again: nor does that read
        assert _last_seen(settings) == earlier
        assert settings.session_idle_s - 101 < left["ends_in_s"] <= settings.session_idle_s - 100

        for act in ({"sec-fetch-user": "?1", **reload}, {}):  # a click or typed URL; a bare client
            _set_last_seen(settings, earlier)
            assert c.get("/campaigns", headers=act).status_code == 200
            assert _last_seen(settings) > earlier + 99
        _set_last_seen(settings, earlier)
        assert c.post("/api/session/activity", headers=csrf).status_code == 204
        assert _last_seen(settings) > earlier + 99
        assert c.post("/api/session/activity").status_code == 403  # a state change: CSRF


def test_a_state_change_refused_for_its_csrf_token_does_not_extend_the_session(
        org: tuple[DashboardSettings, dict[str, Any]]) -> None:
    """A POST without the session's CSRF token is no act of its user (it could be a page of
    another tab's stale session, or a script): refused 403, the idle deadline where it was; the
    same POST with the token extends it."""
    settings, data = org
    with client(settings) as c:
        login_as(c, "sup-a", data)
        earlier = time.time() - 100.0
        for headers in ({}, {"x-csrf-token": "not-the-token"}):
            _set_last_seen(settings, earlier)
            assert c.post("/api/session/activity", headers=headers).status_code == 403
            assert _last_seen(settings) == earlier, headers
        assert c.post("/api/session/activity", headers=csrf_header(c)).status_code == 204
        assert _last_seen(settings) > earlier + 99


@pytest.fixture
def idle_server(tmp_path: Path) -> Iterator[tuple[DashboardServer, dict[str, Any]]]:
    """The seeded org served on a free port, its sessions idle out after :data:`IDLE_S`."""
    settings = make_settings(tmp_path, session_idle_s=IDLE_S)
    data = seed_org(settings, seconds=5)
    with DashboardServer(settings, start_ingest=False) as server:
        yield server, data


@pytest.mark.browser
def test_an_unattended_floor_goes_to_the_login_at_the_idle_timeout(
        idle_server: tuple[DashboardServer, dict[str, Any]], browser_page: Any) -> None:
    """A supervisor's floor left alone: its stream and its stats every 2 s do not hold the
    session; at the idle timeout the page is the login page, saying the session ended."""
    server, data = idle_server
    page = browser_page
    browser_login(page, server.url, "sup-a", USER_PASSWORD, data["secrets"]["sup-a"])
    opened = time.monotonic()
    page.wait_for_url("**/login?ended=1", timeout=int(IDLE_S * 1000 * 5))
    assert time.monotonic() - opened >= IDLE_S - 1
    assert page.locator("#username").is_visible()


@pytest.mark.browser
def test_a_key_on_a_page_holds_the_session_then_the_page_locks_unattended(
        idle_server: tuple[DashboardServer, dict[str, Any]], browser_page: Any) -> None:
    """A page without a live stream (campaigns) reports a key pressed on it (the session's idle
    timer starts again), and once left alone goes to the login page at the idle timeout."""
    server, data = idle_server
    page = browser_page
    browser_login(page, server.url, "sup-a", USER_PASSWORD, data["secrets"]["sup-a"])
    page.goto(server.url + "/campaigns")
    before = _last_seen(server.settings)
    with page.expect_response("**/api/session/activity", timeout=int(IDLE_S * 500)) as answer:
        page.keyboard.press("Tab")
    assert answer.value.status == 204
    assert _last_seen(server.settings) > before
    page.wait_for_url("**/login?ended=1", timeout=int(IDLE_S * 1000 * 5))


@pytest.mark.browser
def test_the_it_page_reloaded_by_itself_goes_to_the_login_when_its_session_ends(
        tmp_path: Path, browser_page: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page loaded without its user's act (the IT page's self-reload, a restored tab) does not
    extend the session, but its script took the session to end a whole idle timeout after the
    load: the IT page stayed open past the end until its next reload (up to 15 s), a tab up to
    the timeout. It now goes to the login page when the session ends, as an opened page does."""
    from dashboard.routes import fleet

    idle_s, refresh_s = 10.0, 5
    monkeypatch.setattr(fleet, "PAGE_REFRESH_S", refresh_s)
    settings = make_settings(tmp_path, session_idle_s=idle_s)
    page = browser_page
    with DashboardServer(settings, start_ingest=False) as server:
        browser_login(page, server.url)
        page.goto(server.url + "/it")
        end_ts = time.time() + refresh_s + 1.0  # just after its first reload
        _set_last_seen(settings, end_ts - idle_s)
        with page.expect_event("load", timeout=refresh_s * 2000):  # no script run in the page: a
            pass  # script Playwright runs is a user's gesture, and a reload soon after one an act
        assert _last_seen(settings) == end_ts - idle_s  # the reload extended nothing
        page.wait_for_url("**/login?ended=1", timeout=int(idle_s * 2000))
        late_s = time.time() - end_ts
    assert late_s < 2.0, f"the login page came {late_s:.1f} s after the session's end"

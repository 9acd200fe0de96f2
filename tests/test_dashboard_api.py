"""Dashboard JSON API: whose data a read is audited on, live views after a seat changes hands,
input bounds, streamed exports, campaign writes, the agent's audit view, aggregates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dashboard import db as store
from dashboard import schema
from dashboard.app import create_app
from dashboard.settings import DashboardSettings
from tests._fixtures_dashboard import (
    ADMIN_PASSWORD,
    USER_PASSWORD,
    client_login,
    csrf_of,
    make_settings,
    seed_org,
)


@pytest.fixture
def org(tmp_path: Path) -> tuple[DashboardSettings, dict[str, Any]]:
    settings = make_settings(tmp_path)
    return settings, seed_org(settings)


def client(settings: DashboardSettings, **kw: Any) -> TestClient:
    return TestClient(create_app(settings, start_ingest=False), base_url="https://testserver",
                      follow_redirects=False, **kw)


def login_as(c: TestClient, user: str, org_data: dict[str, Any]) -> None:
    password = ADMIN_PASSWORD if user == "admin" else USER_PASSWORD
    r = client_login(c, user, password, org_data["secrets"].get(user))
    assert r.status_code == 303 and r.headers["location"] == "/", r.text


def csrf_header(c: TestClient) -> dict[str, str]:
    page = c.get("/", follow_redirects=True)
    return {"x-csrf-token": csrf_of(page.text)}


def query(settings: DashboardSettings, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    db = store.open_db(settings.db_path)
    try:
        return list(db.conn.execute(sql, args).fetchall())
    finally:
        db.conn.close()


def reseat(settings: DashboardSettings, box: str, agent: str, team: str | None = None) -> None:
    db = store.open_db(settings.db_path)
    try:
        if team is None:
            with db.conn:
                schema.assign_seat(db, box, agent)
        else:
            schema.import_inventory(db, [{"box": box, "agent": agent, "team": team}],
                                    site=settings.site)
    finally:
        db.conn.close()


# ------------------------------------------------------------- box reads after re-seating
def test_a_box_read_is_audited_on_the_agents_whose_rows_were_read(org: Any) -> None:
    """box-a1 goes to agent-a2: the 240 rows sup-a reads there are agent-a1's, and the read is
    in agent-a1's audit view, not agent-a2's."""
    settings, data = org
    reseat(settings, "box-a1", "agent-a2")
    with client(settings) as c:
        login_as(c, "sup-a", data)
        rows = c.get("/api/boxes/box-a1/metrics", params={"limit": 5000}).json()["metrics"]
        assert len(rows) == 240
    entries = query(settings, "SELECT agent, detail FROM audit_log "
                              "WHERE action = 'read_box_metrics'")
    assert [(a, json.loads(d)["rows"]) for a, d in entries] == [("agent-a1", 240)]
    with client(settings) as c:
        login_as(c, "amina", data)
        seen = c.get("/api/agents/agent-a1/audit").json()["entries"]
        assert [(e["actor"], e["action"]) for e in seen] == [("sup-a", "read_box_metrics")]


def test_the_live_views_hide_the_previous_agents_rows_after_a_seat_changes_hands(
        org: Any) -> None:
    """box-b1 (team B's agent-b1) goes to agent-a3 of team A: sup-a sees the seat but neither
    agent-b1's latest metrics in /api/boxes nor their talk states in the stream's snapshot, as
    /api/boxes/box-b1/metrics gives no row; the admin still sees them."""
    from dashboard import access
    from dashboard.routes import stream

    settings, data = org
    reseat(settings, "box-b1", "agent-a3", team="team-a")
    with client(settings) as c:
        login_as(c, "sup-a", data)
        boxes = {b["box"]: b for b in c.get("/api/boxes").json()["boxes"]}
        assert boxes["box-b1"]["metrics"] is None
        assert boxes["box-a1"]["metrics"]["seq"] == 240  # the team's own seats are untouched
        assert c.get("/api/boxes/box-b1/metrics").json()["metrics"] == []
    with client(settings) as c:
        login_as(c, "admin", data)
        boxes = {b["box"]: b for b in c.get("/api/boxes").json()["boxes"]}
        assert boxes["box-b1"]["metrics"]["seq"] == 240
    db = store.open_db(settings.db_path)
    try:
        user = access.load_user(db, "sup-a")
        allowed, agents = access.visible_boxes(db, user), access.visible_agents(db, user)
    finally:
        db.conn.close()
    snap = {b["box"]: b for b in stream._snapshot(settings.db_path, settings.site, allowed,
                                                    agents)["boxes"]}
    assert snap["box-b1"]["metrics"] is None and snap["box-b1"]["history"] == []
    assert len(snap["box-a1"]["history"]) == stream.HISTORY
    full = stream._snapshot(settings.db_path, settings.site, None, None)["boxes"]
    assert len(next(b for b in full if b["box"] == "box-b1")["history"]) == stream.HISTORY

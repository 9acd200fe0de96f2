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

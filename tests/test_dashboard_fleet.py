"""Fleet health for IT: problems by severity, offline alerts, Prometheus metrics, direct TLS."""

from __future__ import annotations

import html
import json
import re
import socket
import sqlite3
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from dashboard import auth, fleet, i18n, prom, schema
from dashboard import db as store
from dashboard.app import DashboardServer, create_app
from dashboard.ingest import Ingest
from dashboard.settings import DashboardSettings
from miroir import wire
from tests._fixtures_broker import Peer
from tests._fixtures_dashboard import (
    USER_PASSWORD,
    client_login,
    http_login,
    make_settings,
    seed_org,
)

SITE = "site-1"
TOKEN = "scrape-token-0123456789abcdef"
ALERT_WAIT_S = 30.0  # the brief's bound for an offline alert; it comes in a few seconds


def _status(box: str, state: str = "online", site: str = SITE, **extra: Any) -> bytes:
    return wire.encode("status", wire.status_message(site, box, state, time.time(), **extra))


def _wait(predicate: Any, what: str, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


# ------------------------------------------------------------------------ problem rules
def test_problems_rank_every_fleet_rule_and_age_the_certificate() -> None:
    now = 1_700_000_000.0
    healthy = {"box": "b", "state": "online", "last_seen_ts": now - 5, "last_status_ts": now - 5,
               "version": "1.2.0", "cert_days_left": 200.0, "capture_ok": True,
               "outbox_depth": 3, "dropped": 0, "overruns": 4, "overruns_rise_ts": now - 3600,
               "clock_synced": True, "clock_offset_ms": 12.0, "throttled": False,
               "cpu_temp_c": 55.0}
    assert fleet.problems(healthy, now, "1.2.0") == []
    sick = {**healthy, "cert_days_left": 5.4, "capture_ok": False, "outbox_depth": 1001,
            "dropped": 2, "overruns_rise_ts": now - 60, "clock_offset_ms": -800.0,
            "cpu_temp_c": 81.0, "version": "1.1.9"}
    codes = [p.code for p in fleet.problems(sick, now, "1.2.0")]
    assert codes == ["capture", "cert_expiring", "outbox", "dropped", "overruns", "clock",
                     "thermal", "version"]
    # the box says why its capture failed: IT reads it beside the problem
    lost = {**healthy, "capture_ok": False, "capture_error": "capture device 'hw:1' not found"}
    assert fleet.problems(lost, now, None)[0].detail == "capture device 'hw:1' not found"
    # a refused settings file: the box runs the last good one, IT reads the key and its range
    why = "campaign.toml: monologue.on_s = 3.0 is outside the allowed range 5..600"
    assert fleet.problems({**healthy, "settings_error": why}, now, None) == [fleet.Problem("settings", why)]
    # numbers the box left out of its messages (out of their range on the wire: a bug to report)
    assert fleet.problems({**healthy, "fields_dropped": 3}, now, None) == [fleet.Problem("fields", "3")]
    # Boundaries: exactly at the threshold is no problem.
    edge = {**healthy, "outbox_depth": 1000, "cpu_temp_c": 80.0, "clock_offset_ms": 500.0,
            "cert_days_left": 30.0, "last_status_ts": now}
    assert fleet.problems(edge, now, "1.2.0") == []
    assert [p.code for p in fleet.problems({**healthy, "clock_synced": False}, now, None)] == [
        "clock"]
    # the demo's boxes read the server's clock (clock_shared): not a problem of theirs; a real
    # box (the field absent, or false) keeps its unsynchronised clock on the page
    shared = {**healthy, "clock_synced": False, "clock_offset_ms": 900.0}
    assert fleet.problems({**shared, "clock_shared": True}, now, None) == []
    assert [p.code for p in fleet.problems({**shared, "clock_shared": False}, now, None)] == [
        "clock"]
    assert [p.code for p in fleet.problems({**healthy, "throttled": True}, now, None)] == [
        "thermal"]
    # Offline by status (Last Will) or by silence longer than 3 status periods (30 s).
    assert fleet.problems({**healthy, "state": "offline"}, now, None)[0].code == "offline"
    silent = {**healthy, "last_seen_ts": now - fleet.SILENT_AFTER_S - 1}
    assert fleet.problems(silent, now, None)[0].code == "offline"
    assert fleet.problems({**healthy, "last_seen_ts": now - 29}, now, None) == []
    # A certificate reported 31 days ago with 30 days left has expired since.
    old = {**healthy, "cert_days_left": 30.0, "last_status_ts": now - 31 * 86400}
    expired = fleet.problems(old, now, None)
    assert expired[0].code == "cert_expired" and expired[0].detail == "-1"
    assert fleet.SILENT_AFTER_S == 30.0


def test_common_version_prefers_the_most_common_then_the_newest() -> None:
    assert fleet.common_version(["0.9.0", "0.10.0", "0.9.0"]) == "0.9.0"
    assert fleet.common_version(["0.9.0", "0.10.0"]) == "0.10.0"  # numeric, not text, order
    assert fleet.common_version([]) is None
    assert fleet.version_key("1.10.0") > fleet.version_key("1.9.3")
    # a release after its candidate, as the boxes' updates order them (it read rc1 as newer)
    assert fleet.common_version(["0.2.0rc1", "0.2.0"]) == "0.2.0"


# ------------------------------------------------------------------ ingest and alerts
def test_a_box_leaving_numbers_out_of_its_messages_shows_on_the_it_page(
        dash_settings: DashboardSettings) -> None:
    """The box leaves out a number outside its range on the wire (a bug) and counts it in its
    status (``fields_dropped``): the count reached the database and no page showed it."""
    assert _problems_after(dash_settings, [{"fields_dropped": 2}, {"fields_dropped": 0}]) == [
        [("fields", "2")], []]


def test_a_box_whose_update_was_rolled_back_shows_it_on_the_it_page(
        dash_settings: DashboardSettings) -> None:
    """A box back on its previous release after a failed update read only as "old version"
    (and not even that while the fleet had not moved on): its status names the release rolled
    back, and the IT page says so until an update holds."""
    statuses = [{"version": "1.0", "update_rolled_back": "2.0",
                 "update_rolled_back_ts": time.time() - 60},
                {"version": "2.1", "update_rolled_back": ""}]
    assert _problems_after(dash_settings, statuses) == [[("update", "2.0")], []]
    assert i18n.translate("fr", "problem.update").startswith("Mise à jour annulée")


def _problems_after(settings: DashboardSettings, statuses: list[dict[str, Any]]
                    ) -> list[list[tuple[str, str]]]:
    """The IT page's (code, detail) problems of one box after each of its ``statuses``, through
    the real ingest and database."""
    db = store.open_db(settings.db_path)
    schema.ensure_schema(db)
    schema.import_inventory(db, [{"box": "box-a", "seat": "A1"}], site=SITE)
    ing = Ingest(settings)
    out = []
    try:
        for extra in statuses:
            ing.handle(wire.topic(SITE, "box-a", "status"), _status("box-a", **extra))
            [box] = fleet.fleet(db)["boxes"]
            out.append([(p["code"], p["detail"]) for p in box["problems"]])
    finally:
        ing.close()
        db.conn.close()
    return out


def test_overrun_rises_are_tracked_and_alerts_keep_an_append_only_history(
        dash_settings: DashboardSettings) -> None:
    clock = [time.time()]  # the statuses carry the real time: years ahead are refused
    db = store.open_db(dash_settings.db_path)
    schema.ensure_schema(db)
    schema.import_inventory(db, [{"box": "box-a", "seat": "A1"}], site=SITE)
    ing = Ingest(dash_settings, clock=lambda: clock[0])
    topic = wire.topic(SITE, "box-a", "status")
    try:
        ing.handle(topic, _status("box-a", overruns=3, version="1.0.0"))
        row = db["boxes"].get("box-a")
        assert row["overruns"] == 3 and row["overruns_rise_ts"] == clock[0]
        clock[0] += 20
        ing.handle(topic, _status("box-a", overruns=3))  # no change: the rise time stays
        assert db["boxes"].get("box-a")["overruns_rise_ts"] == clock[0] - 20
        # The batched path (the running ingest's writer) tracks rises the same way.
        clock[0] += 20
        ing.handle_batch([(topic, _status("box-a", overruns=5))])
        assert db["boxes"].get("box-a")["overruns_rise_ts"] == clock[0]
        seen = clock[0]
        # Silent for 30 s: nothing yet; past 30 s: an alert.
        assert fleet.evaluate_alerts(db, now=seen + 30) == ([], [])
        assert fleet.evaluate_alerts(db, now=seen + 31) == (["box-a"], [])
        assert fleet.evaluate_alerts(db, now=seen + 40) == ([], [])  # raised once
        [alert] = fleet.active_alerts(db)
        assert (alert["box"], alert["seat"], alert["reason"], alert["since_ts"]) == (
            "box-a", "A1", "silent", seen)
        view = fleet.fleet(db, now=seen + 40)
        assert view["boxes"][0]["offline"] and view["boxes"][0]["since_ts"] == seen
        # It comes back: cleared; then its Last Will: a new alert, reason "status".
        clock[0] = seen + 50
        ing.handle(topic, _status("box-a"))
        assert fleet.evaluate_alerts(db, now=seen + 51) == ([], ["box-a"])
        ing.handle(topic, _status("box-a", "offline"))
        assert fleet.evaluate_alerts(db, now=seen + 52) == (["box-a"], [])
        history = fleet.alert_history(db)
        assert [(a["reason"], a["cleared_ts"]) for a in history] == [
            ("status", None), ("silent", seen + 51)]
        assert fleet.alert_counts(db) == (1, 2)
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.conn.execute("UPDATE alerts SET cleared_ts = 1 WHERE cleared_ts IS NOT NULL")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.conn.execute("UPDATE alerts SET box = 'box-z'")
    finally:
        ing.close()


# ------------------------------------------------------------------- roles and /metrics
def _org_client(settings: DashboardSettings) -> TestClient:
    return TestClient(create_app(settings, start_ingest=False), base_url="https://testserver",
                      follow_redirects=False)


def test_only_admins_and_it_see_the_fleet_and_it_sees_nothing_else(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    data = seed_org(settings)
    db = store.open_db(settings.db_path)
    auth.create_user(db, "tech", USER_PASSWORD, "it")
    schema.import_inventory(db, [{"box": "box-c9", "seat": "C9"}], site=SITE)  # not yet seen
    now = time.time()
    store.apply_status(db, wire.status_message(SITE, "box-b1", "online", now,
                                               cert_days_left=3.0), now)
    for user, secret in (("sup-a", data["secrets"]["sup-a"]), ("amina", None),
                         ("auditrice", None)):
        with _org_client(settings) as c:
            client_login(c, user, USER_PASSWORD, secret)
            for path in ("/it", "/api/fleet", "/api/alerts"):
                assert c.get(path).status_code == 404, (user, path)
    with _org_client(settings) as c:
        r = client_login(c, "tech", USER_PASSWORD)  # enrols TOTP: IT reaches the internet too
        assert r.status_code == 303 and r.headers["location"] == "/"
        assert c.get("/").headers["location"] == "/it"
        page = c.get("/it")
        assert page.status_code == 200 and 'src="/static/it.js"' in page.text  # self-updating
        assert "Certificat bientôt expiré" in page.text and "Jamais vu" in page.text
        fleet_json = c.get("/api/fleet").json()
        assert [b["box"] for b in fleet_json["boxes"]] == ["box-c9", "box-b1", "box-a1",
                                                           "box-a2"]  # by severity
        assert "agent" not in json.dumps(fleet_json)  # seats and boxes, never who sits there
        for path in ("/api/agents/agent-a1", "/api/boxes", "/api/floor", "/api/teams/team-a/board",
                     "/api/campaigns/camp-a", "/campaigns", "/audit", "/api/audit",
                     "/agents/agent-a1", "/api/aggregates"):
            assert c.get(path).status_code == 404, path
        assert c.get("/api/agents").json() == {"agents": []}
        assert c.get("/api/campaigns").json() == {"campaigns": [], "total": 0, "more": False,
                                                  "after": None, "next_after": None}
        assert c.get("/api/teams").json() == {"teams": []}
    with _org_client(settings) as c:
        client_login(c)
        page = c.get("/it")
        assert page.status_code == 200 and 'id="nav-it"' in page.text


def test_metrics_need_the_bearer_token_and_deny_by_default(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with _org_client(settings) as c:  # no token configured: nobody scrapes
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"authorization": "Bearer "}).status_code == 401
    token_file = tmp_path / "metrics-token"
    token_file.write_text("short\n")
    with pytest.raises(ValueError, match="shorter"):
        create_app(make_settings(tmp_path, metrics_token_file=token_file), start_ingest=False)
    token_file.write_text(TOKEN + "\n")
    settings = make_settings(tmp_path, metrics_token_file=token_file)
    db = store.open_db(settings.db_path)
    schema.ensure_schema(db)
    now = time.time()
    store.apply_status(db, wire.status_message(SITE, "box-a", "online", now, outbox_depth=7,
                                               cpu_temp_c=61.5), now)
    with _org_client(settings) as c:
        for header in (None, "Bearer wrong-token-0123456789", f"Basic {TOKEN}", TOKEN):
            r = c.get("/metrics", headers={"authorization": header} if header else {})
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = c.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        got = _samples(r.text)
        assert got[("miroir_box_outbox_depth", "box-a")] == 7
        assert got[("miroir_box_cpu_temp_celsius", "box-a")] == 61.5
        assert got[("miroir_boxes_online", None)] == 1 and got[("miroir_alerts_active", None)] == 0
        assert got[("miroir_ingest_received_total", None)] == 0
    assert prom.authorized(b"x" * 16, "bearer " + "x" * 16)
    assert not prom.authorized(None, "Bearer anything")


def _samples(text: str) -> dict[tuple[str, str | None], float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, str | None], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, s.labels.get("box") or s.labels.get("quantile")
                 or s.labels.get("problem"))] = s.value
    return out


# -------------------------------------------------------- end to end, real broker
@pytest.fixture
def fleet_server(site: Any, broker: Any, tmp_path: Path) -> Iterator[DashboardServer]:
    """A dashboard on the real broker, with a seat map and a scrape token."""
    token_file = tmp_path / "metrics-token"
    token_file.write_text(TOKEN)
    settings = make_settings(
        tmp_path, site=site.site, mqtt_host="localhost", mqtt_port=broker.port,
        mqtt_ca=site.ca_cert, mqtt_cert=site.dashboard.cert, mqtt_key=site.dashboard.key,
        metrics_token_file=token_file)
    db = store.open_db(settings.db_path)
    schema.ensure_schema(db)
    schema.import_inventory(db, [{"box": "box-a", "seat": "A1"}, {"box": "box-b", "seat": "B7"}],
                            site=site.site)
    db.conn.close()
    server = DashboardServer(settings)
    server.start()
    try:
        assert server.ingest is not None and server.ingest.wait_connected(10.0)
        yield server
    finally:
        server.stop()


@pytest.mark.e2e
def test_box_health_through_the_real_broker_and_an_offline_alert_from_the_last_will(
        fleet_server: DashboardServer, site: Any, broker: Any, peer: Any) -> None:
    ingest = fleet_server.ingest
    assert ingest is not None
    box_a = peer(site.box("box-a"), "box-a")
    box_a.publish(wire.topic(site.site, "box-a", "status"),
                  _status("box-a", site=site.site, version="0.2.0", cert_days_left=5.0,
                          outbox_depth=1500, dropped=3, overruns=9, fields_dropped=4,
                          capture_ok=False,
                          cpu_temp_c=83.0, throttled=True, clock_synced=True,
                          clock_offset_ms=20.0, settings_error="campaign.toml: budget_per_hour"),
                  retain=True)
    # box-b as a real box does it: its Last Will is "offline", retained.
    b_topic = wire.topic(site.site, "box-b", "status")
    box_b = Peer(site.box("box-b"), site.ca_cert, "box-b", broker.port)
    box_b.client.will_set(b_topic, _status("box-b", "offline", site=site.site), qos=1,
                          retain=True)
    assert not box_b.connect().is_failure
    box_b.publish(b_topic, _status("box-b", site=site.site, version="0.3.0",
                                   cert_days_left=300.0), retain=True)
    _wait(lambda: ingest.stats()["received"] >= 2, "both statuses ingested")

    with httpx.Client(base_url=fleet_server.url, timeout=10.0) as c:
        cookie = {"cookie": f"__Host-miroir={http_login(c)}"}
        page = c.get("/it", headers=cookie).text
        row_a = page[page.index('data-box="box-a"'):]
        row_a = html.unescape(row_a[:row_a.index("</tr>")])
        assert "Certificat bientôt expiré (j) <span class=\"detail\">5</span>" in row_a
        assert 'Fichier de réglages refusé (ancienne version en service) <span class="detail">' \
            'campaign.toml: budget_per_hour</span>' in row_a
        for label in ("Casque débranché", "File d'envoi chargée", "Messages perdus",
                      "Débordements audio en hausse", "Surchauffe", "Ancienne version"):
            assert label in row_a, label
        assert ">A1<" in row_a
        fleet_json = c.get("/api/fleet", headers=cookie).json()
        assert [b["box"] for b in fleet_json["boxes"]] == ["box-a", "box-b"]
        assert fleet_json["alerts_active"] == 0 and fleet_json["common_version"] == "0.3.0"

        # The connection drops without a DISCONNECT: the broker publishes box-b's Last Will.
        t0 = time.monotonic()
        box_b.client.loop_stop()
        box_b.client.socket().shutdown(socket.SHUT_RDWR)
        box_b.client.socket().close()
        alerts = _wait(lambda: c.get("/api/alerts", headers=cookie).json()["active"],
                       "an offline alert", ALERT_WAIT_S)
        raised_after_s = time.monotonic() - t0
        assert alerts == 1 and raised_after_s < ALERT_WAIT_S
        page = c.get("/it", headers=cookie).text
        assert 'data-alerts="1"' in page and '<li class="alert" data-box="box-b">' in page
        assert "Last Will" in page
        fleet_json = c.get("/api/fleet", headers=cookie).json()
        assert [b["box"] for b in fleet_json["boxes"]] == ["box-b", "box-a"]  # offline first
        assert fleet_json["boxes"][0]["problems"][0]["code"] == "offline"
        assert fleet_json["boxes"][0]["since_ts"] is not None

        r = c.get("/metrics")
        assert r.status_code == 401
        got = _samples(c.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text)
        assert got[("miroir_alerts_active", None)] == 1
        assert got[("miroir_boxes_offline", None)] == 1 and got[("miroir_boxes_online", None)] == 1
        assert got[("miroir_box_up", "box-b")] == 0 and got[("miroir_box_up", "box-a")] == 1
        assert got[("miroir_box_cert_days_left", "box-a")] == pytest.approx(5.0, abs=0.01)
        assert (got[("miroir_box_outbox_depth", "box-a")], got[("miroir_box_dropped", "box-a")],
                got[("miroir_box_overruns", "box-a")]) == (1500, 3, 9)
        assert got[("miroir_box_cpu_temp_celsius", "box-a")] == 83.0
        assert got[("miroir_box_fields_dropped", "box-a")] == 4
        assert got[("miroir_ingest_received_total", None)] >= 3
        assert got[("miroir_ingest_quarantined_total", None)] == 0
        assert got[("miroir_boxes_with_problem", "cert_expiring")] == 1

        # box-b comes back: the alert clears, the history keeps the episode.
        back = peer(site.box("box-b"), "box-b")
        back.publish(b_topic, _status("box-b", site=site.site, version="0.3.0"), retain=True)
        _wait(lambda: c.get("/api/alerts", headers=cookie).json()["active"] == 0,
              "the alert to clear", ALERT_WAIT_S)
        [episode] = c.get("/api/alerts", headers=cookie).json()["alerts"]
        assert episode["box"] == "box-b" and episode["reason"] == "status"
        assert episode["cleared_ts"] > episode["raised_ts"]


@pytest.mark.e2e
def test_a_box_flooding_the_broker_is_named_on_the_it_page_and_in_prometheus(
        fleet_server: DashboardServer, site: Any, peer: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One box (a stolen certificate, a firmware bug) sending thousands of valid messages a
    second delays every other box's (4,400 a second for 40 s: the others' messages arrived up to
    35.7 s late, and the database grew 41 MB), and nothing named it: the ingest counted the
    site's messages only. Now each box's messages per minute are kept, shown on the IT page
    past 1,200 a minute, and exposed per box to Prometheus."""
    from dashboard import ingest as ingest_module

    monkeypatch.setattr(ingest_module, "RATE_WINDOW_S", 2.0, raising=False)  # minutes are long
    rogue = peer(site.box("box-a"), "box-a")
    honest = peer(site.box("box-b"), "box-b")
    honest.publish(wire.topic(site.site, "box-b", "status"), _status("box-b", site=site.site))
    topic = wire.topic(site.site, "box-a", "metrics")
    for seq in range(1, 3001):
        msg = {"v": wire.SCHEMA_VERSION, "site": site.site, "box": "box-a", "ts": time.time(),
               "seq": seq, "talk_state": "agent"}
        rogue.client.publish(topic, wire.encode("metrics", msg), qos=0)
    with httpx.Client(base_url=fleet_server.url, timeout=10.0) as c:
        cookie = {"cookie": f"__Host-miroir={http_login(c)}"}

        def flood_of(box: str) -> str | None:
            rows = c.get("/api/fleet", headers=cookie).json()["boxes"]
            return next((p["detail"] for b in rows if b["box"] == box for p in b["problems"]
                         if p["code"] == "flood"), None)

        detail = _wait(lambda: flood_of("box-a"), "box-a's flood on the IT page", 20.0)
        assert int(detail) > fleet.MSGS_PER_MIN_HIGH
        assert flood_of("box-b") is None
        row_a = c.get("/it", headers=cookie).text
        row_a = html.unescape(row_a[row_a.index('data-box="box-a"'):])
        assert "Trop de messages (par min)" in row_a[:row_a.index("</tr>")]
        got = _samples(c.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text)
        assert got[("miroir_box_messages_per_minute", "box-a")] > fleet.MSGS_PER_MIN_HIGH
        assert got[("miroir_box_messages_per_minute", "box-b")] < fleet.MSGS_PER_MIN_HIGH
        # The flood over, the next window clears it.
        _wait(lambda: flood_of("box-a") is None, "box-a's flood to clear", 20.0)


# ------------------------------------------------------------------------ direct TLS
def test_served_over_tls_directly_and_plain_http_is_refused(tmp_path: Path) -> None:
    from provisioning import pki

    ca = pki.create_ca(tmp_path / "ca", "site-1")
    cert = pki.issue(ca, tmp_path / "https", "dashboard.local", server=True,
                     hosts=["127.0.0.1", "localhost"], days=15)
    with pytest.raises(ValueError, match="go together"):
        make_settings(tmp_path, tls_cert_file=cert.cert)
    (tmp_path / "metrics-token").write_text(TOKEN)
    settings = make_settings(tmp_path, tls_cert_file=cert.cert, tls_key_file=cert.key,
                             mqtt_ca=ca.cert, metrics_token_file=tmp_path / "metrics-token")
    with DashboardServer(settings, start_ingest=False) as server:
        assert server.url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(ca.cert))
        with httpx.Client(base_url=server.url, verify=trust, timeout=10.0) as c:
            r = c.get("/login")
            assert r.status_code == 200
            assert r.headers["strict-transport-security"].startswith("max-age=")
            # Over https the Secure __Host- cookies come back by themselves.
            cookie = next(h for h in r.headers.get_list("set-cookie")
                          if h.startswith("__Host-miroir-csrf="))
            assert "secure" in cookie.lower()
            assert c.get("/healthz").json()["ok"] is True
            # the certificate it serves, 15 days from its end, is in /metrics for an alert rule
            text = c.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text
            assert re.search(r'^miroir_cert_days_left\{cert="https"\} 1[45]\.\d+$', text, re.M), text
        with pytest.raises(httpx.ConnectError):  # an unknown CA is refused by the client
            httpx.get(server.url + "/healthz", timeout=5.0)
        plain = server.url.replace("https://", "http://")
        with pytest.raises(httpx.TransportError):
            httpx.get(plain + "/healthz", timeout=5.0)


def test_a_last_will_does_not_age_the_certificate_by_the_connection(tmp_path: Path) -> None:
    """A box's Last Will is made when it connects and carries that time: a box up 30 days that
    dies read its certificate as 30 days older (20 days left showed as expired 10 days ago)."""
    db = store.open_db(tmp_path / "dash.db")
    schema.ensure_schema(db)
    now = time.time()
    connected = now - 30 * 86400
    store.apply_status(db, wire.status_message(SITE, "box-a", "online", now - 10,
                                               cert_days_left=20.0), now - 10)
    store.apply_status(db, wire.status_message(SITE, "box-a", "offline", connected), now)
    box = next(b for b in fleet.fleet(db, now)["boxes"] if b["box"] == "box-a")
    assert box["state"] == "offline" and box["offline"]
    assert box["cert_days_now"] == pytest.approx(20.0, abs=0.01)
    assert "cert_expired" not in [p["code"] for p in box["problems"]]


def _reissue(site: Any, folder: str, cn: str, days: float, server: bool = False) -> None:
    """A certificate and key for ``folder`` ending in ``days``, owned and moded as before."""
    import os

    from provisioning import pki

    key = site.dir / folder / "key.pem"
    was = key.stat()
    pki.issue(site.ca, site.dir / folder, cn, server=server, hosts=["localhost", "127.0.0.1"],
              days=days)
    os.chown(key, was.st_uid, was.st_gid)  # the broker's group reads its key
    key.chmod(was.st_mode & 0o777)


@pytest.mark.e2e
def test_the_site_certificates_ending_soon_show_on_the_it_page_and_in_prometheus(
        site: Any, tmp_path: Path) -> None:
    """The broker's certificate 20 days from its end (then every box is refused) and the
    dashboard's 10 days from its end were nowhere on the IT page nor in /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    from provisioning.broker import dashboard_identity

    _reissue(site, "broker", "localhost", 20, server=True)
    _reissue(site, "dashboard", dashboard_identity(site.site), 10)
    token_file = tmp_path / "metrics-token"
    token_file.write_text(TOKEN)
    with site.broker() as broker:
        settings = make_settings(
            tmp_path, site=site.site, mqtt_host="localhost", mqtt_port=broker.port,
            mqtt_ca=site.ca_cert, mqtt_cert=site.dashboard.cert, mqtt_key=site.dashboard.key,
            metrics_token_file=token_file)
        server = DashboardServer(settings)
        server.start()
        try:
            assert server.ingest is not None and server.ingest.wait_connected(10.0)
            with httpx.Client(base_url=server.url, timeout=10.0) as c:
                text = c.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text
                page = c.get("/it", headers={"cookie": f"__Host-miroir={http_login(c)}"}).text
        finally:
            server.stop()
    days = {s.labels["cert"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "miroir_cert_days_left"}
    assert set(days) == {"ca", "broker", "dashboard"}, text
    assert 19.9 < days["broker"] <= 20 and 9.9 < days["dashboard"] <= 10 and days["ca"] > 3000
    rows = {cert: state for cert, state in
            re.findall(r'class="site-cert" data-cert="(\w+)" data-state="(\w+)"', page)}
    assert rows == {"dashboard": "expiring", "broker": "expiring", "ca": "ok"}, rows
    assert page.index('data-cert="dashboard"') < page.index('data-cert="broker"')  # soonest first
    assert "miroir provision expiry" in page


def test_every_series_of_metrics_is_named_in_the_it_guide(tmp_path: Path) -> None:
    """Each series `/metrics` exposes (a scrape of the real app with a box, an alert rule's
    material) is named in the IT guide's list. The list lacked `miroir_ingest_store_retries_total`
    (database busy or failing: batches held unacknowledged) and `miroir_box_series_truncated`."""
    from prometheus_client.parser import text_string_to_metric_families

    guide = (Path(__file__).resolve().parents[1] / "docs" / "it-guide.md").read_text()
    listed = set(re.findall(r"\bmiroir_[a-z_]+\b", guide))
    for head, words, tail in re.findall(r"\b(miroir_[a-z_]*)\{([a-z_,]+)\}([a-z_]*)", guide):
        listed |= {f"{head}{word}{tail}" for word in words.split(",")}
    token_file = tmp_path / "metrics-token"
    token_file.write_text(TOKEN)
    settings = make_settings(tmp_path, metrics_token_file=token_file)
    db = store.open_db(settings.db_path)
    schema.ensure_schema(db)
    now = time.time()
    store.apply_status(db, wire.status_message(SITE, "box-a", "online", now, outbox_depth=7,
                                               cpu_temp_c=61.5, cert_days_left=3.0), now)
    with _org_client(settings) as c:
        text = c.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text
    exposed = {s.name.removesuffix("_total")
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert len(exposed) >= 15
    listed_bare = {name.removesuffix("_total") for name in listed}
    assert exposed - listed_bare == set(), "in /metrics, not in docs/it-guide.md"


@pytest.mark.e2e
def test_a_box_that_stops_saying_its_clock_is_the_servers_is_judged_by_its_own_clock(
        fleet_server: DashboardServer, site: Any, broker: Any, tmp_path: Path) -> None:
    """box-a ran once with ``clock_shared = true`` (a box id the demo used, a settings file
    copied from it), then as a real box, which never sends the field: the dashboard kept the
    first status's ``clock_shared``, so the IT page went on naming box-a's clock "Horloge du
    serveur (boîtier simulé)" and hid its clock problem (an unsynchronised clock, here). A status
    that gives the clock's state now says whose clock it is: without ``clock_shared``, the box's.
    The real agent (`miroir edge run`) twice on the real broker, the real dashboard."""
    import signal

    from edge.health import clock_facts
    from tests.test_private_box import _agent_on_broker

    ingest = fleet_server.ingest
    assert ingest is not None
    with httpx.Client(base_url=fleet_server.url, timeout=10.0) as c:
        cookie = {"cookie": f"__Host-miroir={http_login(c)}"}

        def box_a() -> dict[str, Any]:
            boxes = c.get("/api/fleet", headers=cookie).json()["boxes"]
            return next(b for b in boxes if b["box"] == "box-a")

        for shared in (True, False):
            started_ts = time.time()
            proc, journal = _agent_on_broker(site, broker, tmp_path,
                                             "clock_shared = true\n" if shared else "",
                                             f"journal-{shared}.log")
            try:
                _wait(lambda since=started_ts: box_a()["state"] == "online"
                      and (box_a()["last_status_ts"] or 0) >= since
                      and box_a()["clock_synced"] is not None, "box-a's status", 60.0)
                row = box_a()
                page = html.unescape(c.get("/it", headers=cookie).text)
            finally:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=60) == 0, journal.read_text()[-2000:]
            assert bool(row["clock_shared"]) is shared, row
            assert ("Horloge du serveur (boîtier simulé)" in page) is shared
    clock = clock_facts()
    wrong = not clock.get("clock_synced", True) or \
        abs(float(clock.get("clock_offset_ms") or 0.0)) > fleet.CLOCK_OFFSET_MAX_MS
    assert ("clock" in [p["code"] for p in row["problems"]]) is wrong, (clock, row)

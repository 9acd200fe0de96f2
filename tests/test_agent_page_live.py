"""The supervisor's agent page follows a live call: what the box publishes through the real
broker reaches the open page's charts, with one audit entry for the live view, never one per
update, and only what the reader may see."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from dashboard import db as store
from dashboard import schema
from dashboard.app import DashboardServer
from miroir import wire
from tests._fixtures_dashboard import USER_PASSWORD, browser_login, http_login, seed_org

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

LIVE_WAIT_MS = 3000
STATE_RECTS = "() => document.querySelectorAll('#charts svg')[0].querySelectorAll('rect').length"


def _metrics(site: str, box: str, seq: int, rate_syl_s: float) -> bytes:
    return wire.encode("metrics", {
        "v": wire.SCHEMA_VERSION, "site": site, "box": box, "ts": time.time(), "seq": seq,
        "t_start": float(seq), "window_s": 1.0, "talk_state": "overlap", "near_talking": True,
        "far_talking": True, "near_speech_ratio": 0.5, "far_speech_ratio": 0.5,
        "near_rate_syl_s": rate_syl_s})


def _audit_of(server: DashboardServer, agent: str) -> list[str]:
    db = store.open_db(server.settings.db_path)
    try:
        return [r[0] for r in db.conn.execute(
            "SELECT action FROM audit_log WHERE agent = ? ORDER BY id", (agent,)).fetchall()]
    finally:
        db.conn.close()


def test_the_agent_page_follows_the_call_live_with_one_audit_entry(
        browser_page: Any, dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
    """Supervisor A opens Amina's page; her box publishes five seconds of a call through the
    real broker: the charts grow by five rows and gain the speech-rate chart without a reload,
    the seat's state above them follows the box (then private), and the audit log Amina reads
    gains nothing for them (the page drew 240 rows and kept them, however long the call went
    on)."""
    org = seed_org(dashboard_server.settings)
    site.add_box("box-a1")
    page = browser_page
    browser_login(page, dashboard_server.url, "sup-a", USER_PASSWORD, org["secrets"]["sup-a"])
    page.goto(dashboard_server.url + "/agents/agent-a1")
    page.wait_for_selector("body[data-charts-ready='1'][data-stream-ready='1']")
    rows_before = page.evaluate(STATE_RECTS)
    assert page.locator("#charts figcaption", has_text="Débit, écoute comprise").count() == 0
    opened = _audit_of(dashboard_server, "agent-a1")
    assert sorted(opened) == ["live_view", "read_metrics", "view_agent"]
    box = peer(site.box("box-a1"), "box-a1")
    for seq in range(5000, 5005):
        box.publish(wire.topic(site.site, "box-a1", "metrics"),
                    _metrics(site.site, "box-a1", seq, 4.0 + seq % 5))
        time.sleep(0.2)
    page.wait_for_function(f"() => ({STATE_RECTS})() === {rows_before + 5}",
                           timeout=LIVE_WAIT_MS)
    rate = page.locator("#charts figure", has_text="Débit, écoute comprise")
    rate.wait_for(timeout=LIVE_WAIT_MS)
    assert rate.locator("text").all_text_contents()[2:4] == ["8", "4"]  # its axis: 4 to 8
    assert page.locator("#charts .state-overlap").count() >= 5
    # the seat's state above the charts: the box's last talk state, then its private switch
    assert page.locator("#live-state").inner_text() == "Chevauchement"
    assert page.locator("#live-label").inner_text() == "Au poste, en direct :"  # not a bare word
    box.publish(wire.topic(site.site, "box-a1", "status"), wire.encode("status", wire.status_message(
        site.site, "box-a1", "online", time.time(), private=True)))
    page.locator("#live-state", has_text="Appel privé").wait_for(timeout=LIVE_WAIT_MS)
    assert _audit_of(dashboard_server, "agent-a1") == opened


def test_an_agents_live_stream_keeps_to_the_readers_scope_and_the_agents_seat(
        dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
    """Supervisor A may not follow team B's agent (404, nothing audited); Amina's stream carries
    her box's rows while she sits there, and none once the seat has gone to Yanis."""
    import httpx

    org = seed_org(dashboard_server.settings)
    site.add_box("box-a1")
    box = peer(site.box("box-a1"), "box-a1")
    topic = wire.topic(site.site, "box-a1", "metrics")
    with httpx.Client(base_url=dashboard_server.url, timeout=10.0) as c:
        cookie = {"cookie": f"__Host-miroir="
                            f"{http_login(c, 'sup-a', USER_PASSWORD, org['secrets']['sup-a'])}"}
        assert c.get("/api/stream?agent=agent-b1", headers=cookie).status_code == 404
        assert _audit_of(dashboard_server, "agent-b1") == []
        updates: list[int] = []
        with c.stream("GET", "/api/stream?agent=agent-a1", headers=cookie) as s:
            assert s.status_code == 200
            name = None
            for line in s.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                    continue
                if not line.startswith("data: "):
                    continue
                data = json.loads(line[6:])
                if name == "snapshot":
                    assert [b["box"] for b in data["boxes"]] == ["box-a1"]
                    box.publish(topic, _metrics(site.site, "box-a1", 6000, 5.0))
                elif name == "update" and data["kind"] == "metrics":
                    updates.append(data["seq"])
                    if data["seq"] == 6000:  # the seat goes to Yanis, then the box publishes
                        db = store.open_db(dashboard_server.settings.db_path)
                        try:
                            with db.conn:
                                schema.assign_seat(db, "box-a1", "agent-a2")
                        finally:
                            db.conn.close()
                        time.sleep(0.1)
                        box.publish(topic, _metrics(site.site, "box-a1", 6001, 5.0))
                        box.publish(topic, _metrics(site.site, "box-a1", 6002, 5.0))
                        time.sleep(1.0)
                        box.publish(wire.topic(site.site, "box-a1", "status"), wire.encode(
                            "status", wire.status_message(site.site, "box-a1", "online",
                                                          time.time())))
                elif name == "update" and data["kind"] == "status":
                    break
    assert updates == [6000]
    assert _audit_of(dashboard_server, "agent-a1").count("live_view") == 1


def test_an_agents_live_stream_ends_once_the_agent_is_erased(
        dashboard_server: DashboardServer, site: Any, peer: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An admin erases Amina while supervisor A follows her: the stream ends at its next scope
    check (made 1 s here) instead of carrying on, and a new one is refused with 404."""
    import httpx

    from dashboard import retention
    from dashboard.routes import stream

    monkeypatch.setattr(stream, "SCOPE_REFRESH_S", 1.0)
    org = seed_org(dashboard_server.settings)
    site.add_box("box-a2")
    other = peer(site.box("box-a2"), "box-a2")  # any message wakes the stream up
    with httpx.Client(base_url=dashboard_server.url, timeout=10.0) as c:
        cookie = {"cookie": f"__Host-miroir="
                            f"{http_login(c, 'sup-a', USER_PASSWORD, org['secrets']['sup-a'])}"}
        events = []
        with c.stream("GET", "/api/stream?agent=agent-a1", headers=cookie) as s:
            for line in s.iter_lines():
                if not line.startswith("event: "):
                    continue
                events.append(line[7:])
                if line == "event: snapshot":
                    db = store.open_db(dashboard_server.settings.db_path)
                    try:
                        retention.erase_agent(db, "agent-a1")
                    finally:
                        db.conn.close()
                    time.sleep(1.2)
                    other.publish(wire.topic(site.site, "box-a2", "metrics"),
                                  _metrics(site.site, "box-a2", 7000, 5.0))
        assert events == ["snapshot"]
        assert c.get("/api/stream?agent=agent-a1", headers=cookie).status_code == 404


def test_each_cue_on_the_agent_page_says_the_figure_that_raised_it(
        browser_page: Any, dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
    """A coach reads why a cue was raised, not only its name: the cue list and the charts'
    markers give the box's evidence against its threshold, in the cue's own words and unit
    (the stored cues on load, a monologue raised live through the real broker)."""
    org = seed_org(dashboard_server.settings)
    site.add_box("box-a1")
    page = browser_page
    browser_login(page, dashboard_server.url, "sup-a", USER_PASSWORD, org["secrets"]["sup-a"])
    page.goto(dashboard_server.url + "/agents/agent-a1")
    page.wait_for_selector("body[data-charts-ready='1'][data-stream-ready='1']")
    badges = page.locator("#cue-list .cue-badge")
    assert badges.first.inner_text().split(" · ", 1)[1] == \
        "Ralentissez : débit à 1,4 × la référence (seuil 1,3 ×)"
    box = peer(site.box("box-a1"), "box-a1")
    box.publish(wire.topic(site.site, "box-a1", "event"), wire.encode("event", {
        "v": wire.SCHEMA_VERSION, "site": site.site, "box": "box-a1", "channel": "near",
        "ts": time.time(), "seq": 20_000, "name": "cue_on", "t_audio_s": 300.0,
        "cue": "monologue", "severity": "high", "evidence_value": 61.27,
        "evidence_threshold": 60.0, "evidence_unit": "s"}))
    live = "Laissez parler le prospect : tour de parole qui dure déjà 61,3 s (seuil 60 s)"
    badges.filter(has_text="Laissez parler").wait_for(timeout=LIVE_WAIT_MS)
    assert badges.last.inner_text().split(" · ", 1)[1] == live
    titles = page.locator("#charts svg").first.locator(".cue-marker title").all_text_contents()
    assert titles[0] == "Ralentissez : débit à 1,4 × la référence (seuil 1,3 ×)"
    assert titles[-1] == live

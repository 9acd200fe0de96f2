"""The floor page in Debian's chromium, fed by a box publishing through the real site broker."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from dashboard.app import DashboardServer
from miroir import wire
from tests._fixtures_dashboard import USER_PASSWORD, browser_login, seed_org

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

LIVE_WAIT_MS = 2000  # the brief's bound: the seat changes within 2 s of the publish


def _metrics(site: str, box: str, seq: int, talk_state: str, near: float, far: float) -> bytes:
    return wire.encode("metrics", {
        "v": wire.SCHEMA_VERSION, "site": site, "box": box, "ts": time.time(), "seq": seq,
        "t_start": float(seq), "window_s": 1.0, "near_speech_ratio": near,
        "far_speech_ratio": far, "near_talking": talk_state in ("agent", "overlap"),
        "far_talking": talk_state in ("prospect", "overlap"), "talk_state": talk_state,
    })


def test_floor_page_shows_a_box_live(browser_page: Any, dashboard_server: DashboardServer,
                                     site: Any, peer: Any) -> None:
    page = browser_page
    # Not logged in: the floor redirects to the login form.
    page.goto(dashboard_server.url + "/")
    assert page.url.endswith("/login")
    browser_login(page, dashboard_server.url)
    assert page.locator("#conn-label").inner_text() == "En direct"
    assert page.locator(".seat").count() == 0

    box = peer(site.box("box-a"), "box-a")
    status = wire.status_message(site.site, "box-a", "online", time.time(), version="0.1.0")
    box.publish(wire.topic(site.site, "box-a", "status"), wire.encode("status", status),
                retain=True)
    topic = wire.topic(site.site, "box-a", "metrics")
    box.publish(topic, _metrics(site.site, "box-a", 1, "agent", 0.72, 0.05))
    seat = page.locator(".seat[data-box='box-a']")
    seat.and_(page.locator("[data-state='agent']")).wait_for(timeout=LIVE_WAIT_MS)
    assert seat.locator(".talk-state").inner_text() == "Agent parle"
    assert seat.locator(".online").inner_text() == "En ligne"
    assert seat.locator(".pct-agent").inner_text().replace("\u202f", " ") == "72 %"

    assert seat.locator(".bars-caption").inner_text() == "Parole, dernière seconde"

    box.publish(topic, _metrics(site.site, "box-a", 2, "overlap", 0.5, 0.5))
    page.locator(".seat[data-box='box-a'][data-state='overlap']").wait_for(timeout=LIVE_WAIT_MS)
    assert seat.locator(".talk-state").inner_text() == "Chevauchement"

    box.publish(topic, _metrics(site.site, "box-a", 3, "prospect", 0.1, 0.81))
    page.locator(".seat[data-box='box-a'][data-state='prospect']").wait_for(
        timeout=LIVE_WAIT_MS)
    assert seat.locator(".talk-state").inner_text() == "Prospect parle"
    assert seat.locator(".timeline span.t-agent").count() == 1
    assert seat.locator(".timeline span.t-prospect").count() == 1

    # A cue raised by the box shows on the seat with its French label; a fact (a call starting)
    # and the cue's end do not add a badge.
    event_topic = wire.topic(site.site, "box-a", "event")
    head = {"v": wire.SCHEMA_VERSION, "site": site.site, "box": "box-a", "channel": "near"}
    box.publish(event_topic, wire.encode("event", {
        **head, "ts": time.time(), "seq": 4, "name": "call_start", "t_audio_s": 3.0}))
    box.publish(event_topic, wire.encode("event", {
        **head, "ts": time.time(), "seq": 5, "name": "cue_on", "t_audio_s": 3.5, "cue": "too_fast",
        "severity": "medium", "evidence_value": 1.41, "evidence_threshold": 1.3,
        "evidence_unit": "ratio"}))
    box.publish(event_topic, wire.encode("event", {
        **head, "ts": time.time(), "seq": 6, "name": "cue_off", "t_audio_s": 6.0, "cue": "too_fast"}))
    badge = seat.locator(".cue-badge[data-cue='too_fast']")
    badge.wait_for(timeout=LIVE_WAIT_MS)
    assert badge.inner_text() == "Ralentissez"
    time.sleep(0.3)  # the later events (already published) have arrived
    assert [b.inner_text() for b in seat.locator(".cue-badge").all()] == ["Ralentissez"]

    offline = wire.status_message(site.site, "box-a", "offline", time.time())
    box.publish(wire.topic(site.site, "box-a", "status"), wire.encode("status", offline),
                retain=True)
    page.locator(".seat[data-box='box-a'][data-state='offline']").wait_for(timeout=LIVE_WAIT_MS)
    assert seat.locator(".talk-state").inner_text() == "Hors ligne"
    assert page.locator("#count-total").inner_text() == "1"

    # A reload rebuilds the same seat from the stream's snapshot.
    page.reload()
    page.wait_for_selector("body[data-stream-ready='1']")
    assert page.locator(".seat[data-box='box-a']").get_attribute("data-state") == "offline"
    assert page.locator(".seat[data-box='box-a'] .timeline span.t-overlap").count() == 1


def _seed_floor(site: Any, peer: Any) -> None:
    """A few boxes in every state, for a representative screenshot."""
    states = {"box-a": ("agent", 0.64, 0.12), "box-b": ("prospect", 0.18, 0.71)}
    for b, (st, near, far) in states.items():
        pub = peer(site.box(b), b)
        status = wire.status_message(site.site, b, "online", time.time(), version="0.1.0")
        pub.publish(wire.topic(site.site, b, "status"), wire.encode("status", status),
                    retain=True)
        seq = 0
        for cycle in ("agent", "silence", "prospect", "overlap", "agent", "prospect") * 4:
            seq += 1
            pub.publish(wire.topic(site.site, b, "metrics"),
                        _metrics(site.site, b, seq, cycle, near, far))
        pub.publish(wire.topic(site.site, b, "metrics"),
                    _metrics(site.site, b, seq + 1, st, near, far))


def test_floor_screenshot(browser_page: Any, dashboard_server: DashboardServer,
                          site: Any, peer: Any) -> None:
    page = browser_page
    browser_login(page, dashboard_server.url)
    for b in ("box-c", "box-d", "box-e"):
        site.add_box(b)  # certificate only: the ACL pattern already covers new boxes
    _seed_floor(site, peer)
    extra = {"box-c": ("overlap", 0.55, 0.48), "box-d": ("silence", 0.05, 0.02)}
    for b, (st, near, far) in extra.items():
        pub = peer(site.box(b), b)
        status = wire.status_message(site.site, b, "online", time.time())
        pub.publish(wire.topic(site.site, b, "status"), wire.encode("status", status))
        pub.publish(wire.topic(site.site, b, "metrics"), _metrics(site.site, b, 1, st, near, far))
    pub = peer(site.box("box-e"), "box-e")
    gone = wire.status_message(site.site, "box-e", "offline", time.time())
    pub.publish(wire.topic(site.site, "box-e", "status"), wire.encode("status", gone))
    for b, st in (("box-a", "agent"), ("box-b", "prospect"), ("box-c", "overlap"),
                  ("box-d", "silence"), ("box-e", "offline")):
        page.locator(f".seat[data-box='{b}'][data-state='{st}']").wait_for(timeout=5000)
    assert page.locator(".seat").count() == 5
    out_dir = os.environ.get("MIROIR_SCREENSHOT_DIR")
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        path = Path(out_dir) / "floor.png"
        page.wait_for_timeout(400)  # let the bar transitions finish
        page.screenshot(path=str(path))
        assert path.stat().st_size > 10_000
    data = json.loads(page.evaluate("JSON.stringify([...document.querySelectorAll('.seat')]"
                                    ".map(e => e.dataset.box))"))
    assert data == ["box-a", "box-b", "box-c", "box-d", "box-e"]


def _shot(page: Any, name: str, full_page: bool = False) -> None:
    """The page as shown (or whole, ``full_page``) into ``$MIROIR_SCREENSHOT_DIR/name``, if set."""
    out_dir = os.environ.get("MIROIR_SCREENSHOT_DIR")
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        path = Path(out_dir) / name
        page.wait_for_timeout(300)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(path), full_page=full_page)
        assert path.stat().st_size > 10_000


def test_supervisor_flags_a_moment_and_the_agent_sees_it_and_the_audit(
        chromium: Any, dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
    """The issue's browser acceptance, end to end through the real broker and chromium."""
    org = seed_org(dashboard_server.settings)
    site.add_box("box-a1")
    sup = chromium.new_context(viewport={"width": 1280, "height": 900}, locale="fr-FR")
    page = sup.new_page()
    try:
        browser_login(page, dashboard_server.url, "sup-a", USER_PASSWORD, org["secrets"]["sup-a"])
        # Team A's seats only, with names and the site's layout.
        page.locator(".seat[data-box='box-a1'] .agent-name", has_text="Amina Diallo").wait_for()
        assert page.locator(".seat[data-box='box-b1']").count() == 0
        assert page.locator(".seat[data-box='box-a2'] .box-id").inner_text() == "A2"
        # A seat changes state within 2 s of the box's publish to the real broker.
        box = peer(site.box("box-a1"), "box-a1")
        status = wire.status_message(site.site, "box-a1", "online", time.time())
        box.publish(wire.topic(site.site, "box-a1", "status"), wire.encode("status", status))
        box.publish(wire.topic(site.site, "box-a1", "metrics"),
                    _metrics(site.site, "box-a1", 1000, "overlap", 0.5, 0.5))
        page.locator(".seat[data-box='box-a1'][data-state='overlap']").wait_for(
            timeout=LIVE_WAIT_MS)
        # Pseudonymous mode: seat numbers, no names.
        page.check("#pseudo")
        page.wait_for_selector("body[data-pseudo='1']")
        assert page.locator(".seat[data-box='box-a1'] .agent-name").inner_text() == ""
        page.uncheck("#pseudo")
        page.wait_for_selector("body[data-pseudo='0']")
        # Open the agent: charts with cue markers, then flag a moment with a note.
        page.click(".seat[data-box='box-a1'] a.box-id")
        page.wait_for_url("**/agents/agent-a1")
        page.wait_for_selector("body[data-charts-ready='1']")
        assert page.locator("#charts svg").count() >= 3
        assert page.locator("#charts .cue-marker").count() >= 3
        # the cues the box raised, by their French labels, in time order, each with its evidence
        # in its own unit (the seeded talking-over's came in a ratio, not its seconds: none said)
        cues = [b.inner_text().split(" · ", 1)[1] for b in page.locator("#cue-list .cue-badge").all()]
        assert cues == ["Ralentissez : débit à 1,4 × la référence (seuil 1,3 ×)",
                        "Variez votre intonation : étendue de la voix à 1,4 × la référence "
                        "(seuil 1,3 ×)", "Ne coupez pas la parole au prospect"]
        box_ = page.locator("#charts svg").nth(1).bounding_box()
        assert box_ is not None
        page.mouse.click(box_["x"] + box_["width"] * 0.5, box_["y"] + box_["height"] / 2)
        picked = float(page.locator("#flag-ts").input_value())
        assert time.time() - 300 < picked < time.time()
        page.fill("#flag-note", "Laisser respirer le prospect ici")
        page.click("#flag-submit")
        page.wait_for_url("**/agents/agent-a1#flags")
        assert page.locator("#flag-list .flag-note").first.inner_text() == \
            "Laisser respirer le prospect ici"
        _shot(page, "agent-view.png", full_page=True)  # its flags, goals and calls too
        # Variant comparison with confidence intervals.
        page.goto(dashboard_server.url + "/campaigns/camp-a")
        assert page.locator("#variants tr.variant").count() == 2
        assert page.locator(".ci-chart circle").count() == 2
        _shot(page, "variant-comparison.png")
    finally:
        sup.close()
    agent = chromium.new_context(viewport={"width": 1280, "height": 900}, locale="fr-FR")
    page = agent.new_page()
    try:
        browser_login(page, dashboard_server.url, "amina", USER_PASSWORD, landing="/me")
        flag = page.locator("#flag-list .flag").first
        assert "Laisser respirer le prospect ici" in flag.inner_text()
        assert "sup-a" in flag.inner_text()
        entries = page.locator("#audit-list .audit-entry")
        assert entries.count() >= 2
        assert "sup-a" in entries.first.inner_text()
        assert "a ouvert votre page" in page.locator("#audit-list").inner_text()
        assert page.locator("#flag-form").count() == 0  # agents do not flag themselves
        page.wait_for_selector("body[data-stream-ready='1']")
        # Switch to English: the interface follows, and stays English on the next page.
        page.click("#lang-switch")
        page.wait_for_url("**/me")
        assert page.locator("html").get_attribute("lang") == "en"
        assert page.locator("#audit h2").inner_text() == "Who looked at my data"
        assert "opened your page" in page.locator("#audit-list").inner_text()
        page.reload()
        assert page.locator("#flags h2").inner_text() == "Flagged moments"
    finally:
        agent.close()


def test_supervisor_creates_a_campaign_and_it_sees_the_fleet(chromium: Any,
                                                              tmp_path: Path) -> None:
    """Campaign creation through the real forms, then the IT page, in chromium (with the site's
    certificates: the dashboard's 20 days from its end)."""
    from dashboard import db as store
    from dashboard import schema
    from provisioning import pki
    from tests._fixtures_dashboard import make_settings

    ca = pki.create_ca(tmp_path / "ca", "site-1")
    identity = pki.issue(ca, tmp_path / "dashboard", "dash_site-1", days=20)
    settings = make_settings(tmp_path, mqtt_ca=ca.cert, mqtt_cert=identity.cert,
                             mqtt_key=identity.key)
    org = seed_org(settings, seconds=30)
    db = store.open_db(settings.db_path)
    now = time.time()
    health = {"box-a1": {"version": "0.3.0", "cert_days_left": 12.0, "outbox_depth": 2400},
              "box-a2": {"version": "0.3.0", "capture_ok": False, "cpu_temp_c": 84.0},
              "box-b1": {"version": "0.2.9", "clock_synced": False, "clock_offset_ms": 1800.0}}
    for box, extra in health.items():
        store.apply_status(db, wire.status_message(settings.site, box, "online", now, **extra),
                           now)
    schema.import_inventory(db, [{"box": "box-c1", "seat": "C1"}], site=settings.site)
    db.conn.close()
    with DashboardServer(settings, start_ingest=False) as server:
        ctx = chromium.new_context(viewport={"width": 1280, "height": 900}, locale="fr-FR")
        page = ctx.new_page()
        try:
            browser_login(page, server.url, "sup-a", USER_PASSWORD, org["secrets"]["sup-a"])
            page.click("#nav-campaigns")
            page.wait_for_url("**/campaigns")
            page.fill("#campaign-id", "salon-lille")
            page.fill("#campaign-name", "Salon Lille")
            assert page.locator("#campaign-team option").all_inner_texts() == ["team-a"]
            page.fill("#campaign-variants",
                      "Question ouverte | Comment recrutez-vous ?\nChiffre choc | 3 jours gagnés")
            page.click("#campaign-submit")
            page.wait_for_url("**/campaigns/salon-lille")
            assert page.locator("#variants tr.variant").count() == 2
            assert page.locator("#campaign-state").inner_text() == "En cours"
            # a variant name already used: the campaign again, the reason in French beside the
            # form (the browser showed the API's raw JSON, {"detail": ...}, then an error page)
            page.fill("#add-variant input[name=name]", "Chiffre choc")
            page.click("#add-variant button")
            page.wait_for_url("**/campaigns/salon-lille/variants")
            assert page.locator("#variant-error").inner_text() == \
                "Variante non ajoutée : une variante porte déjà ce nom."
            assert page.locator("#nav-campaigns").count() == 1  # the pages' own frame
            assert page.locator("#variants tr.variant").count() == 2
            page.select_option("#assign-agent select[name=agent]", "agent-a1")
            page.select_option("#assign-agent select[name=variant]", label="Chiffre choc")
            page.click("#assign-agent button")
            page.wait_for_url("**/campaigns/salon-lille")
            assert "Chiffre choc" in page.locator("#campaign-agents li[data-agent='agent-a1']"
                                                  ).inner_text()
            page.click("#close-campaign button")  # the box unticked: the browser keeps the form
            assert page.locator("#campaign-state").inner_text() == "En cours"
            page.check("#close-campaign input[name=confirm]")
            page.click("#close-campaign button")
            page.wait_for_url("**/campaigns/salon-lille")
            assert page.locator("#campaign-state").inner_text() == "Clôturée"
            assert page.locator("#campaign-actions").count() == 0
        finally:
            ctx.close()
        ctx = chromium.new_context(viewport={"width": 1280, "height": 900}, locale="fr-FR")
        page = ctx.new_page()
        try:
            browser_login(page, server.url)
            page.click("#nav-it")
            page.wait_for_url("**/it")
            rows = page.locator("#fleet tr.fleet-box")
            assert rows.count() == 4
            assert rows.first.get_attribute("data-box") == "box-c1"  # never seen, first
            assert page.locator("#fleet tr[data-box='box-a1'] [data-problem='cert_expiring']"
                                ).inner_text() == "Certificat bientôt expiré (j) 12"
            assert "version" in (page.locator("#fleet tr[data-box='box-b1']")
                                 .get_attribute("data-problems") or "")
            certs = page.locator("#site-certs tr.site-cert")
            assert [certs.nth(i).get_attribute("data-cert") for i in range(certs.count())] == [
                "dashboard", "ca"]
            assert certs.first.locator(".badge").inner_text() == (
                "20 · à renouveler : miroir provision expiry")
            assert certs.nth(1).inner_text().startswith("Autorité du site (CA)")
            _shot(page, "it-fleet.png")
        finally:
            ctx.close()


def test_a_seats_bars_read_the_last_30_s_not_the_last_second(
        browser_page: Any, dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
    """A seat's Agent and Prospect bars read the last 1 s metrics window, flipping between 0 and
    100 % as the turns went (the demo floor: 7 of 8 seats at 'Prospect 0 %' under a timeline with
    prospect turns, one reading 'Prospect parle' beside 'Prospect 0 %'): they now read the box's
    rolling 30 s shares, the span of the timeline under them, and say so."""
    page = browser_page
    browser_login(page, dashboard_server.url)
    box = peer(site.box("box-a"), "box-a")
    status = wire.status_message(site.site, "box-a", "online", time.time(), version="0.1.0")
    box.publish(wire.topic(site.site, "box-a", "status"), wire.encode("status", status),
                retain=True)
    message = json.loads(_metrics(site.site, "box-a", 1, "agent", 1.0, 0.0))
    message.update({"in_call": True, "agent_speech_ratio_30s": 0.46,
                    "prospect_speech_ratio_30s": 0.38, "silence_ratio_30s": 0.2})
    box.publish(wire.topic(site.site, "box-a", "metrics"), wire.encode("metrics", message))
    seat = page.locator(".seat[data-box='box-a']")
    seat.and_(page.locator("[data-state='agent']")).wait_for(timeout=LIVE_WAIT_MS)
    assert seat.locator(".pct-agent").inner_text().replace("\u202f", " ") == "46 %"
    assert seat.locator(".pct-prospect").inner_text().replace("\u202f", " ") == "38 %"
    assert seat.locator(".bars-caption").inner_text() == "Parole, 30 dernières s"


def test_a_seats_update_time_writes_its_hour_with_two_digits(
        chromium: Any, dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
    """A seat's "Mis à jour" wrote an hour before ten with one digit ("Mis à jour 6:10:11 UTC")
    where every other time of the dashboard has two ("06:10:56 UTC"): the viewer is put in a
    zone where it is five in the morning now."""
    utc_h = time.gmtime().tm_hour
    east = (5 - utc_h) % 24
    east = east - 24 if east > 14 else east  # Etc/GMT zones run from UTC-12 to UTC+14
    zone = f"Etc/GMT{-east:+d}" if east else "Etc/GMT"  # Etc/GMT-3 is UTC+3
    context = chromium.new_context(locale="fr-FR", timezone_id=zone)
    try:
        page = context.new_page()
        browser_login(page, dashboard_server.url)
        box = peer(site.box("box-a"), "box-a")
        box.publish(wire.topic(site.site, "box-a", "metrics"),
                    _metrics(site.site, "box-a", 1, "agent", 0.7, 0.1))
        updated = page.locator(".seat[data-box='box-a'] .updated")
        updated.wait_for(timeout=LIVE_WAIT_MS)
        text = updated.inner_text()
        assert re.fullmatch(r"Mis à jour 0\d:\d{2}:\d{2} UTC[+−-]?\d*( \(.*\))?", text), text
    finally:
        context.close()

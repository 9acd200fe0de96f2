"""The pages a supervisor, an agent, an auditor and site IT read, in Debian's chromium: what each
shows of the box's metrics, at what scale, in whose time zone and language, on what screen."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from dashboard import analytics, auth, i18n, registry, schema
from dashboard import db as store
from dashboard.app import DashboardServer
from miroir import wire
from tests._fixtures_dashboard import (
    USER_PASSWORD,
    browser_login,
    make_settings,
    seat_unchecked,
    seed_org,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def _box_metrics(near: np.ndarray, far: np.ndarray, call_state: str | None = None,
                 active_after_s: int | None = None) -> list[dict[str, Any]]:
    """The metrics messages of the box's real pipeline over ``near`` and ``far`` (int16), the
    softphone setting ``call_state`` first if given, and ``active`` after ``active_after_s``."""
    from edge.pipeline import Pipeline, load_vad_model

    audio = np.stack([near, far]).astype(np.float32) / 32768.0
    pipe = Pipeline(load_vad_model())
    if call_state is not None:
        pipe.call_state(call_state)
    out = []
    for i in range(0, audio.shape[1], 16_000):
        if active_after_s is not None and i == active_after_s * 16_000:
            pipe.call_state("active")
        out += [m.body for m in pipe(audio[:, i:i + 16_000]) if m.kind == "metrics"]
    return out


# ------------------------------------------------------------------ the agent page's charts
def _agent_a_with_metrics(settings: Any, bodies: list[dict[str, Any]], first_ts: float,
                          now: float) -> None:
    """A dashboard database with its admin, agent-a seated at box-a for the last hour, and
    ``bodies`` as box-a's metrics messages, one a second from ``first_ts``."""
    db = store.open_db(settings.db_path)
    try:
        schema.ensure_schema(db)
        auth.ensure_admin(db, settings.admin_user, settings.admin_password_file)
        schema.import_inventory(db, [{"box": "box-a", "seat": "A", "agent": "agent-a",
                                      "team": "team-a"}], site=settings.site, now=now - 3600)
        for k, body in enumerate(bodies):
            store.insert_metrics(db, {"v": wire.SCHEMA_VERSION, "site": settings.site,
                                      "box": "box-a", "ts": first_ts + k, "seq": k + 1, **body},
                                 now)
    finally:
        db.conn.close()


BOX_METRICS_CHARTED = ("near_rate_syl_s", "near_pitch_movement_st_s", "near_jitter", "near_shimmer",
                       "agent_share_60s", "monologue_s_current", "latency_agent_ms_median_60s",
                       "overlaps_agent_60s",
                       "interruptions_agent_60s", "fatigue_phonation_min")
"""What a supervisor listens for (pace, melody, voice quality, who talks, monologues, answers,
talking over, vocal load), as the box names it."""


def test_every_metric_name_the_dashboard_knows_is_one_the_box_publishes() -> None:
    """A registry name the wire does not carry is a chart that never appears (the box's own name
    for the same measure goes uncharted)."""
    fields = set(wire.ALLOWED_FIELDS["metrics"])
    for base in registry.METRICS:
        assert base in fields or {f"near_{base}", f"far_{base}"} <= fields, base


def test_the_agent_page_charts_what_the_box_measures(
        browser_page: Any, tmp_path: Path, ami_pair: Any) -> None:
    """A minute of two real headsets through the box's pipeline: the agent page has a chart, with
    a line, for the speaking rate, the melody, the answer times, the overlaps and the rest."""
    settings = make_settings(tmp_path)
    msgs = _box_metrics(*ami_pair(60))
    now = time.time()
    _agent_a_with_metrics(settings, msgs, now - len(msgs), now)
    published = {k for m in msgs for k, v in m.items() if v is not None}
    assert set(BOX_METRICS_CHARTED) <= published  # the box did measure each of them
    page = browser_page
    with DashboardServer(settings, start_ingest=False) as server:
        browser_login(page, server.url)
        page.goto(server.url + "/agents/agent-a")
        page.wait_for_selector("body[data-charts-ready='1']")
        drawn = {f.locator("figcaption").inner_text(): f.locator("path.series").count()
                 for f in page.locator("#charts figure").all()}
        without = page.locator("#charts-without-data").inner_text()
    for name in BOX_METRICS_CHARTED:
        info = registry.describe(name, "fr")
        caption = info["label"] + (f" ({info['unit']})" if info["unit"] else "")
        assert drawn.get(caption) == 1, (name, caption, sorted(drawn))
    # what the box did not measure here (no affect model on this box) is named once, not drawn
    # as an empty frame among the others
    tension = registry.describe("prospect_tension", "fr")["label"]
    assert "prospect_tension" not in published
    assert tension in without and not any(c.startswith(tension) for c in drawn), (without, drawn)
    assert all(n >= 1 for c, n in drawn.items() if c != "Tours de parole"), drawn  # lines only


def _emodb_voice(speaker: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of one EmoDB speaker's utterances end to end (a quarter second apart) over a
    live microphone's hiss, int16."""
    from tests._fixtures_signals import clips

    voice = np.concatenate([np.concatenate([c, np.zeros(4000)]) for c in clips(speaker)])[:n]
    return np.clip(16384 * voice + rng.normal(0, 20, n), -32768, 32767).astype(np.int16)


def _without_data(page: Any) -> dict[str, str]:
    """The agent page's metrics without a measurement, by the reason it gives for them."""
    return {li.get_attribute("data-reason"): li.inner_text()
            for li in page.locator("#charts-without-data li").all()}


def test_the_agent_page_says_why_a_metric_has_no_measurement(
        browser_page: Any, tmp_path: Path) -> None:
    """A minute of real EmoDB speech through the box's pipeline. The agent page listed 22 (or 17)
    metrics under "Sans mesure sur cette période" with no word of why; it now says why where the
    box's data does: the line had no signal (its own metrics and those that need both sides), the
    agent's microphone heard too little speech, the fatigue index waits for the agent's
    baseline, the box's prospect analysis is off."""
    rng = np.random.default_rng(7)
    n = 16_000 * 60
    page = browser_page
    for case, near, far in (("dead line", _emodb_voice("03", n, rng), np.zeros(n, np.int16)),
                            ("quiet agent", rng.normal(0, 20, n).astype(np.int16),
                             _emodb_voice("08", n, rng))):
        (tmp_path / case.replace(" ", "-")).mkdir()
        settings = make_settings(tmp_path / case.replace(" ", "-"))
        msgs = _box_metrics(near, far)
        now = time.time()
        _agent_a_with_metrics(settings, msgs, now - len(msgs), now)
        db = store.open_db(settings.db_path)
        try:
            store.apply_status(db, wire.decode("status", wire.encode("status", wire.status_message(
                settings.site, "box-a", "online", now, prospect_affect_state="off"))), now)
        finally:
            db.conn.close()
        with DashboardServer(settings, start_ingest=False) as server:
            browser_login(page, server.url)
            page.goto(server.url + "/agents/agent-a")
            page.wait_for_selector("body[data-charts-ready='1']")
            why = _without_data(page)
            page.context.clear_cookies()
        label = {name: registry.describe(name, "fr")["label"] for name in (
            "far_rate_syl_s", "agent_share_60s", "near_rate_syl_s", "near_pitch_range_st",
            "latency_agent_ms_median_60s")}
        assert why["affect_off"] == ("Analyse du prospect non activée sur ce boîtier : "
                                     "Prospect — tension, Prospect — activation"), (case, why)
        assert why["fatigue_baseline"] == (
            "Calculée une fois apprise la voix de l'agent en début de poste (5 minutes de voix par "
            "défaut) : Fatigue"), (case, why)
        if case == "dead line":
            assert {m["far_signal"] for m in msgs} == {"none"}
            line = why["no_signal_far"]
            assert line.startswith("Ligne sans signal (adaptateur débranché ou en panne) : ")
            assert label["far_rate_syl_s"] in line and label["agent_share_60s"] in line, why
            assert set(why) == {"no_signal_far", "affect_off", "fatigue_baseline"}, why
        else:
            assert {m["near_signal"] for m in msgs} == {"ok"}
            little = why["little_speech"]
            assert little.startswith("Trop peu de parole sur cette période pour les calculer : ")
            assert label["near_rate_syl_s"] in little and label["near_pitch_range_st"] in little
            assert label["latency_agent_ms_median_60s"] in little, why
            assert set(why) == {"little_speech", "affect_off", "fatigue_baseline"}, why


def test_the_pages_say_a_call_on_hold_is_on_hold(browser_page: Any, tmp_path: Path) -> None:
    """The call goes on hold as it starts and the agent asks a colleague for 40 s (real EmoDB
    speech through the box's pipeline): every rolling window lies in the hold, and the box leaves
    it out. The agent page gave "Trop peu de parole" as the reason of the talk share, the answer
    times and the overlaps, and the floor's seat showed the last second's share of the agent's talk
    to the colleague: both now say the call is on hold."""
    rng = np.random.default_rng(7)
    n = 16_000 * 40
    msgs = _box_metrics(_emodb_voice("03", n, rng), rng.normal(0, 20, n).astype(np.int16), "hold")
    assert not [k for m in msgs for k in m if k.endswith(("_30s", "_60s"))]
    assert {m["near_signal"] for m in msgs} == {m["far_signal"] for m in msgs} == {"ok"}
    settings = make_settings(tmp_path)
    now = time.time()
    _agent_a_with_metrics(settings, msgs, now - len(msgs), now)
    db = store.open_db(settings.db_path)
    try:
        store.apply_status(db, wire.decode("status", wire.encode("status", wire.status_message(
            settings.site, "box-a", "online", now, call_state="hold"))), now)
    finally:
        db.conn.close()
    page = browser_page
    with DashboardServer(settings, start_ingest=False) as server:
        browser_login(page, server.url)
        page.goto(server.url + "/agents/agent-a")
        page.wait_for_selector("body[data-charts-ready='1']")
        why = _without_data(page)
        page.goto(server.url + "/")
        seat = page.locator(".seat[data-box='box-a'][data-online='online']")
        seat.wait_for()  # the stream's snapshot, with the box's status and latest metrics, is in
        caption, share = seat.locator(".bars-caption").inner_text(), seat.locator(".pct-agent").inner_text()
    held = why.get("on_hold", "")
    assert held.startswith("En attente : l'appel était en attente sur toute cette période : "), why
    for name in ("agent_share_60s", "latency_agent_ms_median_60s", "overlaps_agent_60s",
                 "interruptions_agent_60s"):
        label = registry.describe(name, "fr")["label"]
        assert label in held and label not in why.get("little_speech", ""), (name, why)
    assert (caption, share) == ("En attente", "—")


def _held_then_taken_back() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The box's metrics over a call on hold as it starts, the agent asking a colleague for 32 s
    (real EmoDB speech), then taken back for 4 s: (those on hold, those after)."""
    rng = np.random.default_rng(7)
    n = 16_000 * 36
    msgs = _box_metrics(_emodb_voice("03", n, rng), rng.normal(0, 20, n).astype(np.int16), "hold",
                        active_after_s=32)
    held = [m for m in msgs if m["on_hold"]]
    after = msgs[len(held):]
    assert held and after and not [m for m in after if m["on_hold"]]
    assert held[-1]["talk_state"] == "agent"  # the agent's aside to the colleague, heard live
    return held, after


def _live_box(site: Any, peer: Any, box_id: str) -> Callable[[list[dict[str, Any]], int], None]:
    """``box_id`` online on the site's broker (its call on hold), and a function that publishes
    metrics bodies through it from a seq on, stamped now."""
    box = peer(site.box(box_id), box_id)
    status = wire.status_message(site.site, box_id, "online", time.time(), call_state="hold")
    box.publish(wire.topic(site.site, box_id, "status"), wire.encode("status", status),
                retain=True)
    topic = wire.topic(site.site, box_id, "metrics")

    def publish(bodies: list[dict[str, Any]], first_seq: int) -> None:
        for k, body in enumerate(bodies):
            box.publish(topic, wire.encode("metrics", {
                "v": wire.SCHEMA_VERSION, "site": site.site, "box": box_id, "ts": time.time(),
                "seq": first_seq + k, **body}))

    return publish


def test_the_floor_s_seat_says_a_call_on_hold_is_on_hold_until_it_ends(
        browser_page: Any, dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
    """The call goes on hold as it starts and the agent asks a colleague for 32 s, then takes the
    call back (real EmoDB speech through the box's pipeline, published live through the site's
    broker). The seat read "Agent parle" over the aside, its timeline in the agent's colour: it
    now reads "En attente" (its seconds on hold so marked on the timeline), and its talk state
    again once the hold ends."""
    held, after = _held_then_taken_back()
    publish = _live_box(site, peer, "box-a")
    page = browser_page
    browser_login(page, dashboard_server.url)
    seat = page.locator(".seat[data-box='box-a']")
    publish(held[-5:], 1)
    # the five seconds are in: the seat's timeline has drawn each
    seat.locator(".timeline span:nth-child(26)[class]:not([class=''])").wait_for(timeout=2000)
    shown = (seat.get_attribute("data-state"), seat.locator(".talk-state").inner_text(),
             seat.locator(".timeline span.t-hold").count(),
             seat.locator(".timeline span.t-agent").count())
    assert shown == ("hold", "En attente", 5, 0), shown
    assert i18n.translate("en", "state.hold") == "On hold"  # the English page's word for it
    publish(after, 6)
    last = after[-1]["talk_state"]
    page.locator(f".seat[data-box='box-a'][data-state='{last}']").wait_for(timeout=2000)
    assert seat.locator(".talk-state").inner_text() == {
        "agent": "Agent parle", "prospect": "Prospect parle", "overlap": "Chevauchement",
        "silence": "Silence"}[last]
    assert seat.locator(".bars-caption").inner_text() == "Parole, 30 dernières s"
    assert seat.locator(".timeline span.t-hold").count() == 5
    # a reload rebuilds the seat's timeline, its seconds on hold with it
    page.reload()
    page.wait_for_selector("body[data-stream-ready='1']")
    assert seat.get_attribute("data-state") == last
    assert seat.locator(".timeline span.t-hold").count() == 5


def test_the_agent_page_s_live_state_says_a_call_on_hold_is_on_hold(
        browser_page: Any, dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
    """The same call on hold on the agent's page: its live state above the charts ("Au poste, en
    direct") read "Agent parle" over the agent's aside to a colleague; it now reads "En attente",
    and the talk state again once the call is taken back. Its "Tours de parole" chart drew those
    seconds as the agent talking: they are drawn as hold ("En attente" in its legend), live and
    from the page's data after a reload."""
    held, after = _held_then_taken_back()
    org = seed_org(dashboard_server.settings)
    site.add_box("box-a1")
    publish = _live_box(site, peer, "box-a1")
    page = browser_page
    browser_login(page, dashboard_server.url, "sup-a", USER_PASSWORD, org["secrets"]["sup-a"])
    page.goto(dashboard_server.url + "/agents/agent-a1")
    page.wait_for_selector("body[data-charts-ready='1'][data-stream-ready='1']")
    rows = "() => document.querySelectorAll('#charts svg')[0].querySelectorAll('rect').length"
    before = page.evaluate(rows)
    publish(held[-3:], 5000)
    page.wait_for_function(f"() => ({rows})() === {before + 3}", timeout=3000)  # the rows are in
    live = page.locator("#live-state")
    assert (live.inner_text(), live.get_attribute("data-state")) == ("En attente", "hold")
    turns = ("() => [...document.querySelectorAll('#charts svg')[0].querySelectorAll('rect')]"
             ".slice(-%d).map((r) => r.getAttribute('class'))")
    assert page.evaluate(turns % 3) == ["state-hold"] * 3  # the turns chart's last seconds
    assert "En attente" in page.locator("#charts .chart-legend").first.inner_text()
    publish(after, 5003)
    page.wait_for_function(f"() => ({rows})() === {before + 3 + len(after)}", timeout=3000)
    last = after[-1]["talk_state"]
    assert live.get_attribute("data-state") == last
    assert live.inner_text() == i18n.translate("fr", "state." + last)
    drawn = page.evaluate(turns % (3 + len(after)))
    assert drawn[:3] == ["state-hold"] * 3 and "state-hold" not in drawn[3:], drawn
    page.reload()  # drawn again from the page's data (the agent's rows through the API)
    page.wait_for_selector("body[data-charts-ready='1']")
    assert page.evaluate(turns % (3 + len(after))) == drawn


def test_every_fatigue_factor_the_dashboard_names_is_one_the_box_publishes() -> None:
    """The page names each factor of the fatigue index: the box's own list, on the wire."""
    from edge.fatigue import FEATURES

    assert set(registry.FATIGUE_FACTORS) == {*FEATURES, "latency"}
    fields = set(wire.ALLOWED_FIELDS["metrics"])
    assert {registry.factor_column(f) for f in registry.FATIGUE_FACTORS} <= fields


def test_the_agent_page_says_what_drives_the_fatigue_index(
        browser_page: Any, tmp_path: Path) -> None:
    """The box publishes the fatigue index with its factors (drifts in standard errors, positive
    towards fatigue), but the page charted the index alone: a supervisor saw 72 and not why. The
    factors of the latest index above measurement noise are now named under its chart, largest
    first."""
    settings = make_settings(tmp_path)
    now = time.time()
    z = {"pitch": 3.14, "level": 2.4, "rate": 0.6, "hnr": -1.5, "latency": 1.2}
    # an earlier row's factors are not the latest index's
    rows = [{"fatigue_index": 60.0 + k, "fatigue_phonation_min": 40.0,
             **{f"fatigue_{f}_z": (v if k == 2 else 5.0) for f, v in z.items()}} for k in range(3)]
    _agent_a_with_metrics(settings, rows, now - 10, now)
    page = browser_page
    with DashboardServer(settings, start_ingest=False) as server:
        browser_login(page, server.url)
        page.goto(server.url + "/agents/agent-a")
        page.wait_for_selector("body[data-charts-ready='1']")
        text = page.locator("#fatigue-factors").inner_text()
        # right under the fatigue chart
        follows = page.evaluate("document.getElementById('fatigue-factors')"
                                ".previousElementSibling.querySelector('figcaption').textContent")
    assert follows == registry.describe("fatigue_index", "fr")["label"]
    named = text.split(":", 1)[1].strip()
    assert named.replace("\u202f", " ") == \
        "voix plus aiguë (+3,1), voix plus faible (+2,4), réponses plus lentes (+1,2)", text


# ------------------------------------------------------------------ the audit page
def _team_mean(settings: Any, team: str, metric: str) -> float | None:
    from dashboard import analytics

    db = store.open_db(settings.db_path)
    try:
        return analytics.team_means(db, team).get(metric, (None, 0))[0]
    finally:
        db.conn.close()


def test_the_audit_page_shows_a_share_in_percent_and_a_missing_mean_as_unknown(
        browser_page: Any, org_server: Any) -> None:
    """The team's mean speech share is 0..1 on the wire: the page says "48.2 %", as the agent's
    chart does, never "0.482 %"; a metric nobody has a value for reads "—", without a unit."""
    server, _ = org_server
    page = browser_page
    browser_login(page, server.url)
    page.goto(server.url + "/audit")
    cells = {tuple(r.locator("td").all_inner_texts()[:2]): r.locator("td").nth(2).inner_text()
             for r in page.locator("#aggregates tr").all() if r.locator("td").count()}
    share = _team_mean(server.settings, "team-a", "near_speech_ratio")
    assert share is not None and 0.2 < share < 0.8
    assert cells[("team-a", "Agent — Temps de parole")] == f"{share * 100:.3g} %"
    assert cells[("team-a", "Agent — Débit, écoute comprise")] == "—"


# ------------------------------------------------------------------ times in the viewer's zone
MORNING_TS = 1795836300.0
"""2026-11-28 03:25:00 UTC, 08:55 in Kolkata: an hour written with one digit by default."""


def test_audit_team_and_it_pages_give_times_in_the_viewers_time_zone(
        chromium: Any, org_server: Any) -> None:
    """A supervisor in Kolkata (UTC+5:30) reads every date of the audit log, the team board and
    the IT page in Kolkata time, as on the agent page, not in UTC; an hour before ten with its
    two digits ("08:55:00", as the charts write it), where it read "8:55:00"."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    server, _ = org_server
    db = store.open_db(server.settings.db_path)
    try:
        with db.conn:  # a remarkable call of team A, on its board
            db.conn.execute("INSERT INTO flags (agent, box, ts, note, author, created_ts, shared) "
                            "VALUES ('agent-a1', 'box-a1', ?, 'bel accueil', 'sup-a', ?, 1)",
                            (time.time() - 50, time.time()))
            db.conn.execute("INSERT INTO flags (agent, box, ts, note, author, created_ts, shared) "
                            "VALUES ('agent-a1', 'box-a1', ?, 'bonne relance', 'sup-a', ?, 1)",
                            (MORNING_TS, time.time()))
    finally:
        db.conn.close()
    context = chromium.new_context(viewport={"width": 1280, "height": 720}, locale="fr-FR",
                                   timezone_id="Asia/Kolkata")
    page = context.new_page()
    try:
        browser_login(page, server.url)
        for path in ("/audit", "/teams/team-a", "/it"):
            page.goto(server.url + path)
            page.wait_for_load_state("load")
            times = page.locator("main time[data-ts]").all()
            assert times, path
            for tm in times[:5]:
                when = datetime.fromtimestamp(float(tm.get_attribute("data-ts") or "nan"),
                                              ZoneInfo("Asia/Kolkata"))
                assert tm.inner_text() == when.strftime("%d/%m/%Y %H:%M:%S UTC+5:30"), path
            if path == "/teams/team-a":
                assert page.locator(f"main time[data-ts='{MORNING_TS}']").inner_text() == \
                    "28/11/2026 08:55:00 UTC+5:30"
    finally:
        context.close()


def test_a_supervisor_in_paris_and_the_agent_in_mauritius_read_each_time_with_its_zone(
        chromium: Any, org_server: Any) -> None:
    """The same flagged moment, chart and cue read three hours apart in Paris (UTC+1 in November)
    and in Mauritius (UTC+4): each time says its zone, so "the call at 13:05" is not looked for
    at 13:05 on the other side (before, both read bare hours: 13:37:08 and 16:37:08)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from tests._fixtures_dashboard import USER_PASSWORD

    server, data = org_server
    flag_ts = 1795866000.0  # 2026-11-28 11:00:00 UTC
    db = store.open_db(server.settings.db_path)
    try:
        with db.conn:
            db.conn.execute("INSERT INTO flags (agent, box, ts, note, author, created_ts, shared) "
                            "VALUES ('agent-a1', 'box-a1', ?, 'coupe le prospect', 'sup-a', ?, 1)",
                            (flag_ts, time.time()))
    finally:
        db.conn.close()
    seen = {}
    for zone, user, secret, landing, path in (
            ("Europe/Paris", "sup-a", data["secrets"]["sup-a"], "/", "/agents/agent-a1"),
            ("Indian/Mauritius", "amina", None, "/me", "/me")):
        context = chromium.new_context(locale="fr-FR", timezone_id=zone)
        try:
            page = context.new_page()
            browser_login(page, server.url, user, USER_PASSWORD, secret, landing=landing)
            page.goto(server.url + path)
            page.wait_for_selector("body[data-charts-ready='1']")
            flag = page.locator(f"#flag-list .flag[data-ts='{flag_ts}'] time").inner_text()
            axis = [t.text_content() or "" for t in
                    page.locator("#charts figure").first.locator("svg text").all()][:2]
            cue = page.locator("#cue-list button").first.inner_text()
            seen[zone] = (flag, axis, cue)
        finally:
            context.close()
    for zone, name in (("Europe/Paris", "UTC+1"), ("Indian/Mauritius", "UTC+4")):
        flag, axis, cue = seen[zone]
        when = datetime.fromtimestamp(flag_ts, ZoneInfo(zone))
        assert flag == when.strftime(f"%d/%m/%Y %H:%M:%S {name}"), (zone, flag)
        assert all(a.endswith(f" {name}") for a in axis), (zone, axis)
        assert f" {name} · " in cue, (zone, cue)


def test_chart_times_follow_the_page_s_language_not_the_browser_s(
        chromium: Any, org_server: Any) -> None:
    """A French supervisor whose browser is set to American English: the charts' times read
    13:37:08 UTC+1 like every other time on her French page (they read 01:37:08 PM GMT+1)."""
    import re

    from tests._fixtures_dashboard import USER_PASSWORD

    server, data = org_server
    context = chromium.new_context(locale="en-US", timezone_id="Europe/Paris")
    try:
        page = context.new_page()
        browser_login(page, server.url, "sup-a", USER_PASSWORD, data["secrets"]["sup-a"])
        page.goto(server.url + "/agents/agent-a1")
        page.wait_for_selector("body[data-charts-ready='1']")
        assert page.evaluate("document.documentElement.lang") == "fr"
        axis = [t.text_content() or "" for t in
                page.locator("#charts figure").first.locator("svg text").all()][:2]
    finally:
        context.close()
    assert len(axis) == 2 and all(re.fullmatch(r"\d\d:\d\d:\d\d UTC\+1", a) for a in axis), axis


# ------------------------------------------------------------------ French and English
def test_roles_are_named_in_the_pages_language(chromium: Any, org_server: Any) -> None:
    """A French page says "Superviseur", not the role's id "supervisor": in the audit log and in
    the agent's own "who looked at my data"; an English page says "Supervisor"."""
    from tests._fixtures_dashboard import USER_PASSWORD

    server, data = org_server
    url = server.url
    sup = chromium.new_context(locale="fr-FR")
    try:
        page = sup.new_page()
        browser_login(page, url, "sup-a", USER_PASSWORD, data["secrets"]["sup-a"])
        page.goto(url + "/agents/agent-a1")
    finally:
        sup.close()
    agent = chromium.new_context(locale="fr-FR")
    try:
        page = agent.new_page()
        browser_login(page, url, "amina", USER_PASSWORD, landing="/me")
        assert "sup-a (Superviseur)" in page.locator("#audit-list .audit-entry").first.inner_text()
        # the agent is told what the log leaves out: the live floor shows the seat unlogged
        assert "plan de salle en direct" in page.locator("#audit-scope").inner_text()
        page.click("#lang-switch")
        page.wait_for_url("**/me")
        assert "sup-a (Supervisor)" in page.locator("#audit-list .audit-entry").first.inner_text()
    finally:
        agent.close()
    admin = chromium.new_context(locale="fr-FR")
    try:
        page = admin.new_page()
        browser_login(page, url)
        page.goto(url + "/audit")
        roles = {r.locator("td").nth(1).inner_text(): r.locator("td").nth(2).inner_text()
                 for r in page.locator("#audit-log tr.audit-entry").all()}
        assert roles["sup-a"] == "Superviseur" and roles["admin"] == "Administrateur"
    finally:
        admin.close()


# ------------------------------------------------------------------ moment replay
def test_a_replayed_moment_shows_only_the_cues_and_flags_of_its_minute(
        browser_page: Any, org_server: Any) -> None:
    """Replaying the "slow down" cue (the first of three, a minute apart) shows the minute around
    it: its cue marker and badge only, not the cues raised a minute and two minutes later, nor a
    moment flagged two minutes later."""
    server, _ = org_server
    db = store.open_db(server.settings.db_path)
    try:
        with db.conn:
            db.conn.execute("INSERT INTO flags (agent, box, ts, note, author, created_ts) VALUES "
                            "('agent-a1', 'box-a1', ?, 'plus tard', 'sup-a', ?)",
                            (time.time() - 80, time.time()))
    finally:
        db.conn.close()
    page = browser_page
    browser_login(page, server.url)
    page.goto(server.url + "/agents/agent-a1")
    page.wait_for_selector("body[data-charts-ready='1']")
    badges = page.locator("#cue-list .cue-badge")
    assert badges.count() == 3
    page.evaluate("document.body.dataset.chartsReady = '0'")
    badges.first.click()
    page.wait_for_selector("body[data-charts-ready='1']")
    assert page.locator("#charts h3").inner_text().startswith("Rejouer")
    labels = [b.split(" · ", 1)[1] for b in badges.all_inner_texts()]
    assert labels == ["Ralentissez : débit à 1,4 × la référence (seuil 1,3 ×)"]
    assert page.locator("#charts svg").first.locator(".cue-marker").count() == 1
    assert page.locator("#charts svg").first.locator(".flag-marker").count() == 0


# ------------------------------------------------------------------ the agent's live strip
class _AgentsBox:
    """Agent ``ines`` (password USER_PASSWORD) at seat A, and box-a publishing through the real
    broker with its own certificate: ``status()`` (retained) and ``metrics(talk_state)``."""

    def __init__(self, dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
        from tests._fixtures_dashboard import USER_PASSWORD

        db = store.open_db(dashboard_server.settings.db_path)
        try:
            schema.import_inventory(db, [{"box": "box-a", "seat": "A", "agent": "agent-a"}],
                                    site=site.site)
            auth.create_user(db, "ines", USER_PASSWORD, "agent", agent="agent-a")
        finally:
            db.conn.close()
        self.site = site.site
        self.box = peer(site.box("box-a"), "box-a")
        self.seq = 0

    def status(self, state: str = "online", **extra: Any) -> None:
        msg = wire.status_message(self.site, "box-a", state, time.time(), **extra)
        self.box.publish(wire.topic(self.site, "box-a", "status"), wire.encode("status", msg),
                         retain=True)

    def metrics(self, talk_state: str) -> None:
        self.seq += 1
        self.box.publish(wire.topic(self.site, "box-a", "metrics"), wire.encode("metrics", {
            "v": wire.SCHEMA_VERSION, "site": self.site, "box": "box-a", "ts": time.time(),
            "seq": self.seq, "t_start": float(self.seq), "window_s": 1.0, "talk_state": talk_state,
            "near_talking": talk_state == "agent", "far_talking": talk_state == "prospect"}))


@contextlib.contextmanager
def _supervisor_on_agent_a(chromium: Any, server: DashboardServer) -> Iterator[Any]:
    """A French browser page of the admin on agent-a's page, its live stream open."""
    context = chromium.new_context(locale="fr-FR")
    try:
        page = context.new_page()
        browser_login(page, server.url)
        page.goto(server.url + "/agents/agent-a")
        page.wait_for_selector("body[data-stream-ready='1']")
        yield page
    finally:
        context.close()


def _shows(page: Any, text: str, timeout_ms: int = 2000) -> None:
    """Wait until the page's live strip reads exactly ``text``."""
    page.wait_for_function("(t) => document.getElementById('live-state').textContent === t",
                           arg=text, timeout=timeout_ms)


def test_the_agents_live_strip_says_private_or_offline_never_the_last_talk_state(
        browser_page: Any, chromium: Any, dashboard_server: DashboardServer, site: Any,
        peer: Any) -> None:
    """The agent's own page, fed by the box through the real broker: once the box says private
    (its button) or goes offline, the strip says so, live and on a fresh page, instead of the
    talk state the box last measured before. It speaks to the agent ("Vous parlez", "Le prospect
    parle"), where it read them the floor's "Agent parle"; the supervisor's page keeps the
    floor's words."""
    from tests._fixtures_dashboard import USER_PASSWORD

    seat = _AgentsBox(dashboard_server, site, peer)
    status, metrics = seat.status, seat.metrics

    page = browser_page
    strip = page.locator("#live-state")

    def shows(text: str) -> None:
        _shows(page, text)

    status(private=False)
    metrics("agent")
    with _supervisor_on_agent_a(chromium, dashboard_server) as sup:
        _shows(sup, "Agent parle")
    browser_login(page, dashboard_server.url, "ines", USER_PASSWORD, landing="/me")
    page.wait_for_selector("body[data-stream-ready='1']")
    shows("Vous parlez")
    status(private=True)  # the box's private button
    shows("Appel privé")
    page.reload()
    page.wait_for_selector("body[data-stream-ready='1']")
    assert strip.inner_text() == "Appel privé"
    # the private switch says what the box says, whoever turned it on: it offers to end it
    assert page.locator("#private-state").is_visible()
    assert page.locator("#private-toggle").inner_text() == "Fin de l'appel privé"
    status(private=False)  # and the box's button turned it off again
    metrics("prospect")
    shows("Le prospect parle")
    page.reload()
    page.wait_for_selector("body[data-stream-ready='1']")
    assert page.locator("#private-state").count() == 0
    assert page.locator("#private-toggle").inner_text() == "Passer en appel privé"
    status("offline")
    shows("Votre boîtier est hors ligne")
    page.reload()
    page.wait_for_selector("body[data-stream-ready='1']")
    assert strip.inner_text() == "Votre boîtier est hors ligne"


def test_the_private_switch_never_says_on_when_the_box_is_offline(
        browser_page: Any, dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
    """The agent presses "private" while their box is offline (the broker is up): the box, whose
    session is clean, never gets the command, so the page must say so and tell them to use the
    box's button, never "Mode privé actif"; once the box is back, its word takes the warning
    away and the same switch works."""
    from tests._fixtures_dashboard import USER_PASSWORD

    seat = _AgentsBox(dashboard_server, site, peer)
    seat.status("offline")
    page = browser_page
    browser_login(page, dashboard_server.url, "ines", USER_PASSWORD, landing="/me")
    page.locator("#live-state", has_text="Hors ligne").wait_for(timeout=2000)
    # what the switch does is said before it is pressed (it was said only once it was on)
    assert page.locator("#private-help").inner_text().startswith(
        "Dès que vous passez en appel privé, votre boîtier ne mesure et n'envoie plus rien")
    page.click("#private-toggle")
    page.wait_for_selector("body[data-stream-ready='1']")
    assert page.locator("#private-state").count() == 0, page.inner_text("#private")
    assert page.locator("#private-unsent").is_visible()
    assert page.locator("#private-toggle").inner_text() == "Passer en appel privé"
    seat.status(private=False)  # the box is back
    page.locator("#live-state", has_text="—").wait_for(timeout=2000)
    # its word takes the warning away (it stayed, the box reachable again, until a reload)
    assert page.locator("#private-unsent").count() == 0
    page.click("#private-toggle")
    page.wait_for_selector("body[data-stream-ready='1']")
    assert page.locator("#private-state").is_visible()
    assert page.locator("#private-unsent").count() == 0


def test_the_private_panel_s_changes_are_announced(
        browser_page: Any, dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
    """Ines's switch could not reach her offline box, so her page told her to use the box's
    button; she did, and the box, back, says private. The panel's words changed to "Mode privé
    actif" outside any live region: a screen reader said nothing of it. What the panel says is
    in a polite live region now."""
    from tests._fixtures_dashboard import USER_PASSWORD
    from tests.test_dashboard_a11y import SPOKEN

    seat = _AgentsBox(dashboard_server, site, peer)
    seat.status("offline")
    page = browser_page
    browser_login(page, dashboard_server.url, "ines", USER_PASSWORD, landing="/me")
    page.locator("#live-state", has_text="Hors ligne").wait_for(timeout=2000)
    page.click("#private-toggle")
    page.wait_for_selector("body[data-stream-ready='1']")
    assert page.locator("#private-unsent").is_visible()
    live = page.locator("#private-said")  # what the panel says, the switch's state
    assert live.get_attribute("aria-live") == "polite" and live.locator("#private-help").count() == 1
    page.evaluate(SPOKEN)
    seat.status(private=True)  # the box's own button, the box back online
    page.locator("#live-state", has_text="Appel privé").wait_for(timeout=2000)
    assert live.locator("#private-state").inner_text() == "Mode privé actif : rien n'est mesuré."
    assert "Mode privé actif : rien n'est mesuré." in page.evaluate("window.spoken")
    assert page.locator("#private-unsent").count() == 0  # the box spoke: it was reached
    assert page.locator("#private-toggle").inner_text() == "Fin de l'appel privé"


def test_a_reload_of_the_private_switchs_answer_shows_what_the_box_says_since(
        browser_page: Any, dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
    """Ines turns private mode on (her page's address becomes /me?sent=on#private), her box
    says so, then its own button turns it off. Reloaded at that address, her page said "Mode
    privé actif : rien n'est mesuré" and offered to end the private call while the box measured
    again: the address's "sent" stood for the box's word however old. It now stands only until
    the box's next status, for 10 s at most: the reloaded page says what the box said last; and
    a made-up address (?sent=on, or an "at" in the future) claims nothing."""
    from tests._fixtures_dashboard import USER_PASSWORD

    seat = _AgentsBox(dashboard_server, site, peer)
    seat.status(private=False)
    page = browser_page
    browser_login(page, dashboard_server.url, "ines", USER_PASSWORD, landing="/me")
    page.wait_for_selector("body[data-stream-ready='1']")
    _shows(page, "—")
    page.click("#private-toggle")
    page.wait_for_selector("body[data-stream-ready='1']")
    assert "/me?sent=on" in page.url
    assert page.locator("#private-state").is_visible()  # sent: said at once
    seat.status(private=True)  # the box confirms
    _shows(page, "Appel privé")
    seat.status(private=False)  # then its own button ends the private call
    _shows(page, "—")
    page.reload()
    page.wait_for_selector("body[data-stream-ready='1']")
    assert page.locator("#private-state").count() == 0, page.inner_text("#private")
    assert page.locator("#private-toggle").inner_text() == "Passer en appel privé"
    for made_up in ("/me?sent=on", f"/me?sent=on&at={time.time() + 3600:.0f}"):
        page.goto(dashboard_server.url + made_up)
        assert page.locator("#private-state").count() == 0, made_up


def _private_panel(page: Any, on: bool, timeout_ms: int = 2000) -> None:
    """Wait until the private switch's panel says private mode is ``on`` (or off), its button
    offering the other, and check that the button sends that other."""
    wanted = "Fin de l'appel privé" if on else "Passer en appel privé"
    page.wait_for_function(
        "([on, label]) => !!document.getElementById('private-state') === on"
        " && document.getElementById('private-toggle').textContent === label",
        arg=[on, wanted], timeout=timeout_ms)
    assert page.locator("#private-state").is_visible() is on, page.inner_text("#private")
    assert page.locator("#private-help").is_visible() is not on
    assert page.locator("#private input[name=private]").input_value() == ("0" if on else "1")


def test_an_open_agent_page_says_what_the_box_says_of_private_mode_without_a_reload(
        browser_page: Any, dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
    """Ines has her page open in two tabs. She turns private mode on in the first; the box says
    so: the second, opened before, still offered "Passer en appel privé" with the help of a seat
    that measures. Then the box's own button ends the private call: the first tab still said
    "Mode privé actif : rien n'est mesuré." (and offered to end it) while its live strip, above
    nothing else, showed the box measuring again; only a reload told the truth. Each open page's
    switch now follows what the box says (its status on the stream), once the box has spoken
    since the switch was sent; the second tab's button then sends what it offers."""
    from tests._fixtures_dashboard import USER_PASSWORD

    seat = _AgentsBox(dashboard_server, site, peer)
    seat.status(private=False)
    first = browser_page
    browser_login(first, dashboard_server.url, "ines", USER_PASSWORD, landing="/me")
    first.wait_for_selector("body[data-stream-ready='1']")
    second = first.context.new_page()
    second.goto(dashboard_server.url + "/me")
    second.wait_for_selector("body[data-stream-ready='1']")
    _private_panel(second, False)
    first.click("#private-toggle")
    first.wait_for_selector("body[data-stream-ready='1']")
    assert "/me?sent=on" in first.url
    _private_panel(first, True)  # sent: said at once, the box's older status notwithstanding
    seat.status(private=True)  # the box confirms
    _shows(second, "Appel privé")
    _private_panel(second, True)
    seat.status(private=False)  # the box's own button ends the private call
    _shows(first, "—")
    _private_panel(first, False)
    _private_panel(second, False)
    seat.status(private=True)  # on again by the box's button; the second tab ends it
    _private_panel(second, True)
    second.click("#private-toggle")
    second.wait_for_selector("body[data-stream-ready='1']")
    assert "/me?sent=off" in second.url
    _private_panel(second, False)


def test_a_private_switch_the_box_never_confirms_is_said_done_for_10_s_only(
        browser_page: Any, dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
    """Ines turns private mode on; her box, online a moment ago, never answers (it stopped
    before the command reached it): the open page said "Mode privé actif" for as long as it
    stayed open. It now says so for 10 s (docs/privacy.md), then what the box said last."""
    from tests._fixtures_dashboard import USER_PASSWORD

    seat = _AgentsBox(dashboard_server, site, peer)
    seat.status(private=False)
    page = browser_page
    page.clock.install()  # the 10 s fast-forwarded below instead of waited for
    browser_login(page, dashboard_server.url, "ines", USER_PASSWORD, landing="/me")
    page.wait_for_selector("body[data-stream-ready='1']")
    page.click("#private-toggle")
    page.wait_for_selector("body[data-stream-ready='1']")
    assert "/me?sent=on" in page.url
    page.clock.fast_forward(8_000)
    _private_panel(page, True)  # still within its 10 s
    page.clock.fast_forward(3_000)
    _private_panel(page, False)


def test_the_api_says_what_the_box_says_of_private_mode_as_the_pages_do(
        dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
    """Ines turns private mode on with her box's button: her page and the floor said "Appel
    privé", but GET /api/agents/agent-a (to her and to the admin) and the floor's seat list
    (GET /api/floor) said "private": false, the dashboard switch's last word; once she ended it
    with the same button after turning it on from her page, they said true while the box
    measured. Each now says what the box says, the dashboard's switch standing in only for a box
    that never said."""
    import httpx

    from tests._fixtures_broker import wait_until
    from tests._fixtures_dashboard import USER_PASSWORD, csrf_of, http_login

    seat = _AgentsBox(dashboard_server, site, peer)

    def box_said(private: bool) -> bool:
        db = store.open_db(dashboard_server.settings.db_path)
        try:
            row = db.conn.execute("SELECT private FROM boxes WHERE box = 'box-a'").fetchone()
            return row is not None and row[0] == int(private)
        finally:
            db.conn.close()

    with httpx.Client(base_url=dashboard_server.url, timeout=10.0) as c:
        ines = {"cookie": f"__Host-miroir={http_login(c, 'ines', USER_PASSWORD)}"}
        admin = {"cookie": f"__Host-miroir={http_login(c)}"}

        def said() -> list[bool]:
            seats = c.get("/api/floor", headers=admin).json()["seats"]
            return [c.get("/api/agents/agent-a", headers=ines).json()["private"],
                    c.get("/api/agents/agent-a", headers=admin).json()["private"],
                    *(s["private"] for s in seats if s["box"] == "box-a")]

        assert said() == [False, False, False]  # a box that never said: the switch's word
        seat.status(private=True)  # the box's button
        wait_until(lambda: box_said(True), "the box's private status")
        assert said() == [True, True, True]
        r = c.post("/me/private", headers=ines,
                   data={"private": "0", "csrf": csrf_of(c.get("/me", headers=ines).text)})
        assert r.status_code == 303 and "sent=off" in r.headers["location"]
        r = c.post("/me/private", headers=ines,
                   data={"private": "1", "csrf": csrf_of(c.get("/me", headers=ines).text)})
        assert r.status_code == 303 and "sent=on" in r.headers["location"]
        seat.status(private=False)  # the box's button ends the call the page made private
        wait_until(lambda: box_said(False), "the box's status")
        assert said() == [False, False, False]
        seat.status(private=True)  # on again by its button, after the page's switch said off
        wait_until(lambda: box_said(True), "the box's private status")
        assert said() == [True, True, True]


def test_the_agents_live_strip_says_offline_when_the_box_falls_silent(
        browser_page: Any, dashboard_server: DashboardServer, site: Any, peer: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A box whose status still says online but that has sent nothing for the IT page's silence
    threshold (made 4 s here) is offline on the agent's own strip too, as on the floor; its next
    message brings the talk state back."""
    from dashboard import fleet
    from tests._fixtures_dashboard import USER_PASSWORD

    monkeypatch.setattr(fleet, "SILENT_AFTER_S", 4.0)
    seat = _AgentsBox(dashboard_server, site, peer)
    seat.status(private=False)
    seat.metrics("agent")
    page = browser_page
    browser_login(page, dashboard_server.url, "ines", USER_PASSWORD, landing="/me")
    page.wait_for_selector("body[data-stream-ready='1']")
    _shows(page, "Vous parlez")
    _shows(page, "Votre boîtier est hors ligne", 8000)  # silent for 4 s
    seat.metrics("prospect")
    _shows(page, "Le prospect parle", 3000)


def test_the_agents_live_strip_says_restarting_during_a_planned_restart_then_offline(
        browser_page: Any, chromium: Any, restart_server: DashboardServer, site: Any,
        peer: Any) -> None:
    """Ines's box stops for an update (its offline status says ``restart``): the IT page shows
    it restarting for the dashboard's grace (45 s here), but her strip and her supervisor's said
    "hors ligne" at once, and her empty charts "Boîtier hors ligne depuis". They now say it
    restarts, live and on a fresh page, for that grace; then offline if it is not back; back, its
    state at once. A stop for good says offline at once, as before."""
    from tests._fixtures_dashboard import RESTART_GRACE_S, USER_PASSWORD

    seat = _AgentsBox(restart_server, site, peer)
    seat.status(private=False)
    with _supervisor_on_agent_a(chromium, restart_server) as sup:
        _shows(sup, "—")
        seat.status("offline", restart="update")  # the agent's stop before an update's restart
        _shows(sup, "Redémarrage")
    page = browser_page
    page.clock.install()  # the grace fast-forwarded below instead of waited for
    browser_login(page, restart_server.url, "ines", USER_PASSWORD, landing="/me")
    page.wait_for_selector("body[data-charts-ready='1'][data-stream-ready='1']")
    _shows(page, "Votre boîtier redémarre")  # from the stream's snapshot
    empty = page.locator("#charts #charts-empty")
    restarting = "Boîtier en redémarrage (mise à jour ou réglages) depuis "
    assert empty.inner_text().startswith(restarting)
    seat.status(private=False)  # back: its state at once
    _shows(page, "—")
    assert empty.inner_text() == "Pas encore de mesures."
    seat.status("offline")  # a stop for good: offline at once
    _shows(page, "Votre boîtier est hors ligne")
    assert empty.inner_text().startswith("Boîtier hors ligne depuis ")
    seat.status(private=False)
    _shows(page, "—")
    seat.status("offline", restart="reload")  # good settings: the agent ends to restart
    _shows(page, "Votre boîtier redémarre")
    assert empty.inner_text().startswith(restarting)
    page.clock.fast_forward(int((RESTART_GRACE_S - 10) * 1000))  # silent past SILENT_AFTER_S
    _shows(page, "Votre boîtier redémarre")  # still within its grace
    page.clock.fast_forward(15_000)  # past the grace, not back: offline
    _shows(page, "Votre boîtier est hors ligne")
    assert empty.inner_text().startswith("Boîtier hors ligne depuis ")


def test_an_agent_without_rows_is_told_why_when_private_or_offline(
        chromium: Any, dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
    """Ines's box is in private mode, then offline, with no row in her shift: her charts said
    only "Pas encore de mesures." each time, as for a box that had just started. They now say
    what the seat's live state knows: the private call measures nothing, the box is offline
    since it was last heard (in the reader's zone); back online, the bare sentence returns."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from tests._fixtures_dashboard import USER_PASSWORD

    seat = _AgentsBox(dashboard_server, site, peer)
    seat.status(private=True)
    context = chromium.new_context(locale="fr-FR", timezone_id="Indian/Mauritius")
    try:
        page = context.new_page()
        browser_login(page, dashboard_server.url, "ines", USER_PASSWORD, landing="/me")
        page.wait_for_selector("body[data-charts-ready='1'][data-stream-ready='1']")
        empty = page.locator("#charts #charts-empty")
        assert empty.inner_text() == "Appel privé : rien n'est mesuré pendant ce temps."
        seat.status("offline", private=False)
        _shows(page, "Votre boîtier est hors ligne")
        db = store.open_db(dashboard_server.settings.db_path)
        try:
            heard = db.conn.execute("SELECT last_seen_ts FROM boxes WHERE box = 'box-a'"
                                    ).fetchone()[0]
        finally:
            db.conn.close()
        since = datetime.fromtimestamp(heard, ZoneInfo("Indian/Mauritius")).strftime("%H:%M")
        assert empty.inner_text() == f"Boîtier hors ligne depuis {since} UTC+4."
        page.reload()  # a fresh page knows it from the stream's snapshot
        page.wait_for_selector("body[data-charts-ready='1'][data-stream-ready='1']")
        assert empty.inner_text() == f"Boîtier hors ligne depuis {since} UTC+4."
        seat.status(private=False)
        _shows(page, "—")
        assert empty.inner_text() == "Pas encore de mesures."
    finally:
        context.close()


# ------------------------------------------------------------------ screens
PAGE_WIDTH = "() => [document.documentElement.scrollWidth, window.innerWidth]"
CUT_FORMS = """() => [...document.querySelectorAll('.panel form')].filter((f) => {
    const panel = f.closest('.panel').getBoundingClientRect();
    return [...f.elements].some((e) => e.type !== 'hidden'
                                && e.getBoundingClientRect().right > panel.right + 0.5);
  }).map((f) => f.getAttribute('action'))"""
"""The forms of a page's panels with a field or button past the panel's edge (out of sight,
behind the panel's own scroll bar)."""
CHART_LABEL_PX = """() => Math.min(...[...document.querySelectorAll('#charts svg text')]
    .map((t) => t.getBoundingClientRect().height))"""
"""The height on screen of a chart's smallest label (its times, its scale)."""
READY = {"/": "body[data-stream-ready='1'] .seat", "/agents/agent-a1": "body[data-charts-ready='1']",
         "/me": "body[data-charts-ready='1']"}
"""What each page draws once its scripts have run (the floor's seats, the agent's charts)."""


@pytest.mark.parametrize("width,height", [(1280, 720), (390, 844)])
def test_the_pages_fit_the_screen_without_scrolling_sideways(
        chromium: Any, org_server: Any, width: int, height: int) -> None:
    """A laptop (1280x720) and a phone (390 px, where supervisors check the floor): the login
    form, the floor on its site's seat map, the agent page, the team board, the campaigns, the
    audit log, the IT page, an error page and the agent's own page are no wider than the screen
    (a wide table scrolls inside its panel), no form of theirs has a field past its panel's edge,
    and the agent page's charts write their times and scales as on a laptop. The floor was
    434 px wide on the phone: its seat map's two columns of at least 200 px."""
    from tests._fixtures_dashboard import USER_PASSWORD

    server, _ = org_server
    size = {"width": width, "height": height}
    admin = chromium.new_context(viewport=size, locale="fr-FR")
    agent = chromium.new_context(viewport=size, locale="fr-FR")
    widths, cut = {}, {}
    try:
        page = admin.new_page()
        page.goto(server.url + "/login")
        widths["/login"] = page.evaluate(PAGE_WIDTH)
        browser_login(page, server.url)
        for path in ("/", "/agents/agent-a1", "/teams/team-a", "/campaigns", "/campaigns/camp-a",
                     "/audit", "/it", "/agents/nobody"):
            page.goto(server.url + path)
            page.wait_for_selector(READY.get(path, "body"))
            widths[path] = page.evaluate(PAGE_WIDTH)
            cut[path] = page.evaluate(CUT_FORMS)
            if path == "/agents/agent-a1":
                label_px = page.evaluate(CHART_LABEL_PX)
        assert page.locator("#error-message").count() == 1
        page = agent.new_page()
        browser_login(page, server.url, "amina", USER_PASSWORD, landing="/me")
        page.wait_for_selector(READY["/me"])
        widths["/me"] = page.evaluate(PAGE_WIDTH)
        cut["/me"] = page.evaluate(CUT_FORMS)
    finally:
        admin.close()
        agent.close()
    assert len(widths) == 10
    assert {p: w for p, (w, inner) in widths.items() if w > inner} == {}
    assert {p: forms for p, forms in cut.items() if forms} == {}
    assert label_px >= 9.0  # 5 px on the phone when its charts were 760 wide shrunk to 310


PAST_PANEL = """() => [...document.querySelectorAll(
    '.flag-note, li.goal > strong, .list li, .chip-link, .panel h2')].filter((e) => {
    const box = (e.closest('.panel') || document.querySelector('main')).getBoundingClientRect();
    return e.getBoundingClientRect().right > box.right + 0.5;
  }).map((e) => e.id || e.className || e.tagName)"""
"""What a user wrote (a flag's note, a goal, a campaign's name) past the edge of its panel."""
PASTED = "https://crm.example.com/fiche?prospect=" + "7" * 80
"""A link pasted as is: no space where a line could break."""


@pytest.mark.parametrize("width,height", [(1280, 720), (390, 844)])
def test_a_pasted_link_in_a_note_a_goal_or_a_campaign_name_wraps_within_its_panel(
        chromium: Any, org_server: Any, width: int, height: int) -> None:
    """A supervisor pastes a link (no space in it) as a flag's note, a goal's name and a
    campaign's name, each at its longest: on a 390 px phone the campaigns page was 1,178 px wide
    (the campaign's link in its list of campaigns), and the note ran 1,047 px past the agent
    page's flags panel, the goal past the goals panel and the team board's shared moments past
    theirs, to be read by scrolling each panel sideways. They now wrap within their panel, on
    the phone and on a laptop."""
    import httpx

    from tests._fixtures_dashboard import USER_PASSWORD, csrf_of, http_login

    server, data = org_server
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        cookie = {"cookie": "__Host-miroir="
                            f"{http_login(c, 'sup-a', USER_PASSWORD, data['secrets']['sup-a'])}"}
        hdr = {**cookie, "x-csrf-token": csrf_of(c.get("/", headers=cookie).text)}
        for path, body in (
                ("/api/agents/agent-a1/flags",
                 {"ts": time.time() - 60, "note": PASTED * 16, "shared": True}),
                ("/api/agents/agent-a1/goals",
                 {"metric": "near_speech_ratio", "label": PASTED[:120]}),
                ("/api/campaigns", {"campaign": "relance", "name": PASTED[:120], "team": "team-a"})):
            assert c.post(path, json=body, headers=hdr).status_code == 201, path
    widths, past = {}, {}
    context = chromium.new_context(viewport={"width": width, "height": height}, locale="fr-FR")
    try:
        page = context.new_page()
        browser_login(page, server.url)
        for path in ("/agents/agent-a1", "/teams/team-a", "/campaigns", "/campaigns/relance"):
            page.goto(server.url + path)
            page.wait_for_selector(READY.get(path, "body"))
            widths[path] = page.evaluate(PAGE_WIDTH)
            past[path] = page.evaluate(PAST_PANEL)
    finally:
        context.close()
    assert {k: w for k, (w, inner) in widths.items() if w > inner} == {}
    assert {k: p for k, p in past.items() if p} == {}


def test_a_long_variant_name_stays_left_of_the_comparison_chart(
        browser_page: Any, org_server: Any) -> None:
    """A variant named in a sentence ("Question ouverte sur la logistique du stand", 43 of the
    80 characters allowed) was written across the comparison chart: its label ran to x = 281
    where the bars begin at 170, under its own confidence interval (drawn from 245). A label
    longer than its column is now cut after a word with "…", the whole name in its tooltip (and in the table
    under the chart); a short name is as it was."""
    import httpx

    from tests._fixtures_dashboard import USER_PASSWORD, csrf_of, http_login

    server, data = org_server
    name = "Question ouverte sur la logistique du stand"
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        cookie = {"cookie": "__Host-miroir="
                            f"{http_login(c, 'sup-a', USER_PASSWORD, data['secrets']['sup-a'])}"}
        hdr = {**cookie, "x-csrf-token": csrf_of(c.get("/campaigns", headers=cookie).text)}
        assert c.post("/api/campaigns/camp-a/variants", headers=hdr,
                      json={"name": name}).status_code == 201
    page = browser_page
    browser_login(page, server.url)
    page.goto(server.url + "/campaigns/camp-a")
    labels = page.evaluate("""() => [...document.querySelectorAll('svg.ci-chart g.variant-name')]
        .map((g) => { const t = g.querySelector('text'), box = t.getBBox();
                      return [t.textContent, g.querySelector('title').textContent,
                              Math.round(box.x + box.width)]; })""")
    assert [(shown, full) for shown, full, _ in labels] == [
        ("Question ouverte", "Question ouverte"), ("Bénéfice direct", "Bénéfice direct"),
        ("Question ouverte sur…", name)]
    assert max(right for _, _, right in labels) <= 160, labels
    assert page.locator("tr.variant strong").all_inner_texts()[-1] == name


# ------------------------------------------------------------------ the calls table
def test_a_call_without_an_outcome_reads_unknown_not_meeting_booked(
        browser_page: Any, org_server: Any) -> None:
    """agent-b1's call has no outcome yet: its row says "—" and saving it untouched tags nothing,
    where it read "Rendez-vous" (the list's first choice) as if a meeting had been booked. A call
    tagged by mistake goes back to "—" the same way."""
    server, data = org_server
    call = data["team_b"]["calls"][0]
    page = browser_page
    browser_login(page, server.url)
    page.goto(server.url + "/agents/agent-b1")
    row = page.locator(f"tr.call[data-call='{call}']")
    select = row.locator("select[name=outcome]")
    assert select.evaluate("s => s.options[s.selectedIndex].text") == "—"
    # its columns are named, and its campaign by its name, not its id ('camp-b')
    assert page.locator("#calls th").all_inner_texts() == ["Début", "Campagne", "Durée", "Issue"]
    assert row.locator("td").nth(1).inner_text() == "Mutuelle"
    row.locator("button[type=submit]").click()  # "—" saved on an untagged call: nothing to do
    page.wait_for_url(f"**/agents/agent-b1#call-{call}")
    assert _outcome_and_audits(server, call) == (None, 0)
    select.select_option("callback")
    row.locator("button[type=submit]").click()
    page.wait_for_url(f"**/agents/agent-b1#call-{call}")
    assert select.evaluate("s => s.options[s.selectedIndex].text") == "À rappeler"
    assert _outcome_and_audits(server, call) == ("callback", 1)
    # tagged by mistake: "—" takes the tag back off (the browser's own "Sélectionnez un élément
    # dans la liste" stopped it before), audited as any change of outcome
    select.select_option(label="—")
    row.locator("button[type=submit]").click()
    page.wait_for_url(f"**/agents/agent-b1#call-{call}")
    assert select.evaluate("s => s.options[s.selectedIndex].text") == "—"
    assert _outcome_and_audits(server, call) == (None, 2)


def _outcome_and_audits(server: Any, call: int) -> tuple[str | None, int]:
    """The call's outcome and how many changes of outcome the audit log records of it."""
    db = store.open_db(server.settings.db_path)
    try:
        outcome = db.conn.execute("SELECT outcome FROM calls WHERE id = ?", (call,)).fetchone()[0]
        n = db.conn.execute("SELECT count(*) FROM audit_log WHERE action = 'call_outcome' AND "
                            "json_extract(detail, '$.call') = ?", (call,)).fetchone()[0]
    finally:
        db.conn.close()
    return outcome, n


def test_on_a_phone_the_calls_list_does_not_bury_the_page_and_a_tag_comes_back_to_its_call(
        chromium: Any, org_server: Any) -> None:
    """Amina's 30 calls took 2,930 px of a 390 px wide phone, her page 5,126 px in all for a
    supervisor, and saving an outcome brought the page back to its top, thousands of pixels
    above the call. The latest calls are listed, the older ones a tap
    away, and a saved outcome comes back to its call, in sight."""
    server, _ = org_server
    context = chromium.new_context(viewport={"width": 390, "height": 844}, locale="fr-FR")
    try:
        page = context.new_page()
        browser_login(page, server.url)
        page.goto(server.url + "/agents/agent-a1")
        page.wait_for_selector("body[data-charts-ready='1']")
        assert page.locator("tr.call").count() == 30
        calls_px = page.evaluate("document.getElementById('calls').offsetHeight")
        assert calls_px < 1400, calls_px
        assert page.evaluate("document.documentElement.scrollHeight") < 3500
        shown = page.locator("tr.call:visible")
        assert shown.count() == 10
        older = page.locator("#calls-older summary")
        assert older.inner_text() == "Appels plus anciens (20)"
        older.click()
        assert shown.count() == 30
        last = page.locator("tr.call").last
        call = last.get_attribute("data-call")
        last.locator("select[name=outcome]").select_option("no_answer")
        last.locator("button[type=submit]").click()
        page.wait_for_url(f"**/agents/agent-a1#call-{call}")
        row = page.locator(f"tr.call[data-call='{call}']")
        assert row.locator("select[name=outcome]").input_value() == "no_answer"
        assert row.is_visible()
        top, bottom = row.evaluate("r => [r.getBoundingClientRect().top, "
                                   "r.getBoundingClientRect().bottom]")
        assert top >= 0 and bottom <= 844, (top, bottom)
    finally:
        context.close()


@pytest.mark.parametrize("width", [360, 390])
def test_on_a_phone_the_agent_reads_who_looked_and_when_without_scrolling_sideways(
        chromium: Any, org_server: Any, width: int) -> None:
    """Amina reads "Qui a consulté mes données" on her phone: the summary's table was 370 px
    wide in a panel of 320 px (360 px phone) or 350 px (390 px), so its "Dernière fois" column,
    when each supervisor last looked, was cut off at the panel's edge, to be found by scrolling
    the panel sideways. On a phone each line of the summary now keeps within the panel, its count
    and last time named."""
    import httpx

    from tests._fixtures_dashboard import USER_PASSWORD, http_login

    server, org = org_server
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        sup = {"cookie": "__Host-miroir="
                         f"{http_login(c, 'sup-a', USER_PASSWORD, org['secrets']['sup-a'])}",
               "accept": "text/html"}
        for path in ("/agents/agent-a1", "/teams/team-a", "/api/agents/agent-a1/export.csv"):
            assert c.get(path, headers=sup).status_code == 200
    context = chromium.new_context(viewport={"width": width, "height": 800}, locale="fr-FR")
    try:
        page = context.new_page()
        browser_login(page, server.url, "amina", USER_PASSWORD, landing="/me")
        rows = page.locator("#audit-summary .audit-summary-row")
        assert rows.count() == 3
        panel = page.evaluate("() => { const p = document.getElementById('audit'); "
                              "const r = p.getBoundingClientRect(); "
                              "return [p.scrollWidth, p.clientWidth, r.right]; }")
        assert panel[0] <= panel[1], f"the panel scrolls sideways: {panel}"
        for i in range(3):
            cells = rows.nth(i).evaluate(
                "r => [...r.cells].map(c => [getComputedStyle(c, '::before').content, "
                "c.getBoundingClientRect().right])")
            assert all(right <= panel[2] for _, right in cells), cells
            assert [label for label, _ in cells[2:]] == ['"Nombre de fois : "',
                                                         '"Dernière fois : "'], cells
            assert rows.nth(i).locator("time").is_visible()
    finally:
        context.close()


def test_an_english_goal_without_a_trend_counts_its_days_in_english(
        chromium: Any, org_server: Any) -> None:
    """A goal whose metric has no day of data yet: "0 j" on a French page, "0 d" on an English
    one, not the French abbreviation."""
    server, _ = org_server
    db = store.open_db(server.settings.db_path)
    try:
        with db.conn:
            db.conn.execute("INSERT INTO goals (agent, metric, label, direction, author, "
                            "created_ts) VALUES ('agent-a1', 'near_rate_syl_s', 'ralentir', "
                            "'down', 'sup-a', ?)", (time.time(),))
    finally:
        db.conn.close()
    context = chromium.new_context(locale="fr-FR")
    try:
        page = context.new_page()
        browser_login(page, server.url)
        page.goto(server.url + "/agents/agent-a1")
        goal = page.locator("#goals .goal", has_text="ralentir")
        assert goal.inner_text().endswith("0 j")
        page.click("#lang-switch")
        page.wait_for_url("**/agents/agent-a1")
        assert goal.inner_text().endswith("0 d")
    finally:
        context.close()


def test_a_goal_shows_its_figures_not_a_bare_line(chromium: Any, org_server: Any) -> None:
    """A goal with days of data drew a sparkline without a number (its trend only in the
    screen reader's label), with one day "1 j" alone: the coach reads where it started and where
    it is, in the metric's unit, beside the line (with one day, that day's figure)."""
    server, _ = org_server
    db = store.open_db(server.settings.db_path)
    try:
        start = analytics.day_start_s(db)
        with db.conn:
            db.conn.execute("INSERT INTO goals (agent, metric, label, direction, author, "
                            "created_ts) VALUES ('agent-a1', 'near_speech_ratio', 'parler moins', "
                            "'down', 'sup-a', ?)", (time.time(),))
            db.conn.execute("INSERT INTO goals (agent, metric, label, direction, author, "
                            "created_ts) VALUES ('agent-a1', 'far_speech_ratio', 'écouter', "
                            "'up', 'sup-a', ?)", (time.time(),))
            for days_ago, mean in ((2, 0.62), (1, 0.58)):
                db.conn.execute("INSERT INTO daily_aggregates (day, agent, metric, mean, n) "
                                "VALUES (?, 'agent-a1', 'near_speech_ratio', ?, 3600)",
                                (analytics._day(time.time() - days_ago * 86400, start), mean))
        series = analytics.daily_means(db, "agent-a1", "near_speech_ratio")
        today = analytics.daily_means(db, "agent-a1", "far_speech_ratio")
    finally:
        db.conn.close()
    assert len(series) == 3 and len(today) == 1
    last = f"{series[-1][1] * 100:.3g}".replace(".", ",")
    context = chromium.new_context(locale="fr-FR")
    try:
        page = context.new_page()
        browser_login(page, server.url)
        page.goto(server.url + "/agents/agent-a1")
        goal = page.locator("#goals .goal", has_text="parler moins")
        assert goal.locator("svg.spark").count() == 1
        assert goal.locator(".goal-figures").all_inner_texts() == [f"de 62 % à {last} % en 3 j"]
        one = page.locator("#goals .goal", has_text="écouter")
        assert one.locator(".goal-figures").all_inner_texts() == \
            [f"{today[0][1] * 100:.3g} % sur 1 j".replace(".", ",")]
    finally:
        context.close()


# ------------------------------------------------------------------ ids as the inventory gives them
def test_an_agent_whose_id_holds_a_hash_can_be_opened_coached_and_exported(
        browser_page: Any, org_server: Any) -> None:
    """Inventory ids were free text: agent "agent #7" (Nadia) is reached from the team board,
    flagged, has a call tagged and the language switched on her page, and exported, each time on
    her own page, where "#" cut the link to "/agents/agent " (agent not found). The import now
    refuses a "#": she is in the database as an older import left her."""
    server, _ = org_server
    now = time.time()
    db = store.open_db(server.settings.db_path)
    try:
        seat_unchecked(db, "box-a3", "agent #7", "team-a", now=now - 600, name="Nadia",
                       seat="A3")
        with db.conn:
            db.conn.execute("INSERT INTO calls (agent, box, start_ts, end_ts) VALUES "
                            "('agent #7', 'box-a3', ?, ?)", (now - 300, now - 200))
    finally:
        db.conn.close()
    page = browser_page
    browser_login(page, server.url)
    page.goto(server.url + "/teams/team-a")
    page.click("#board a:has-text('Nadia')")
    page.wait_for_selector("#agent-name")
    assert page.locator("#agent-name").inner_text() == "Nadia"
    page.fill("#flag-note", "bonne reformulation")
    page.click("#flag-submit")
    page.wait_for_url("**#flags")
    assert page.locator("#flag-list .flag-note").first.inner_text() == "bonne reformulation"
    page.locator("tr.call select[name=outcome]").select_option("callback")
    page.locator("tr.call button[type=submit]").click()
    page.wait_for_load_state()
    assert page.locator("#agent-name").inner_text() == "Nadia"
    page.click("#lang-switch")
    page.wait_for_load_state()
    assert page.locator("#flags h2").inner_text() == "Flagged moments"
    assert page.locator("#agent-name").inner_text() == "Nadia"
    export = page.request.get(server.url + (page.locator("#export-csv").get_attribute("href")
                                             or ""))
    assert export.status == 200
    assert "filename*=UTF-8''agent%20%237.csv" in export.headers["content-disposition"]


# ------------------------------------------------------------------ error pages
def _raised_details() -> list[str]:
    """The ``detail`` of every HTTPException the dashboard raises, each ``{...}`` of an f-string
    given as ``x``, and each noun ``access.not_found`` is called with, as its detail."""
    import ast

    details, nouns = [], []
    for path in Path("dashboard").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            if name == "not_found" and node.args and isinstance(node.args[0], ast.Constant):
                nouns.append(f"{node.args[0].value} not found")
            for kw in node.keywords if name == "HTTPException" else []:
                if kw.arg == "detail" and isinstance(kw.value, ast.Constant):
                    details.append(str(kw.value.value))
                elif kw.arg == "detail" and isinstance(kw.value, ast.JoinedStr):
                    details.append("".join(str(v.value) if isinstance(v, ast.Constant) else "x"
                                           for v in kw.value.values))
    return details + nouns


def test_every_error_detail_the_dashboard_gives_has_its_french() -> None:
    """A French page showed the API's English detail ("agent not found") under its French
    sentence: each detail the dashboard raises reads in French, and stays as it is in English."""
    from dashboard import i18n

    details = _raised_details()
    assert len(details) >= 25
    assert {d: i18n.detail("fr", d) for d in details if i18n.detail("fr", d) == d} == {}
    assert all(i18n.detail("en", d) == d for d in details)
    assert i18n.detail("fr", "team not found") == "équipe introuvable"


def test_a_forms_address_typed_in_says_so_in_french_not_that_the_request_is_malformed(
        org_server: Any) -> None:
    """A supervisor who typed /logout (or reopened a form's address, a campaign's /close) read
    "La demande est mal formée." over "405 · Method Not Allowed", in English: the page now says
    the address is a button's of the page, to use as one, with its detail in French."""
    import re

    import httpx

    from tests._fixtures_dashboard import http_login

    server, _ = org_server
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        cookie = {"cookie": f"__Host-miroir={http_login(c)}", "accept": "text/html"}
        pages = {path: c.get(path, headers=cookie) for path in ("/logout", "/campaigns/camp-a/close")}
        still_in = c.get("/", headers=cookie).status_code
    for path, r in pages.items():
        message = re.search(r'<p id="error-message" role="alert">([^<]+)</p>', r.text)
        detail = re.search(r'<code id="error-detail">([^<]+)</code>', r.text)
        assert r.status_code == 405 and message and detail, path
        assert message.group(1) == ("Cette adresse est celle d&#39;un bouton de la page "
                                    "(Déconnexion, Clôturer…) : utilisez le bouton, pas la barre "
                                    "d&#39;adresse."), path
        assert detail.group(1) == "méthode non permise", path
    assert still_in == 200  # a GET logs nobody out


def test_the_turns_chart_stays_within_its_time_axis_in_step_with_the_lines(
        browser_page: Any, org_server: Any) -> None:
    """Each second of the turns chart was drawn from its row's time onwards, though a row's time
    is the end of the second it measured: the chart ran a second past the end of its time axis
    (18 px of a 60 s replay at 1366 px, beyond the lines' charts under it) and a second behind
    them. Each second now ends at its row's time: the latest reaches the axis's end, none goes
    past either end."""
    server, _ = org_server
    page = browser_page
    browser_login(page, server.url)
    page.goto(server.url + "/agents/agent-a1")
    page.wait_for_selector("body[data-charts-ready='1']")
    edges = page.evaluate("""() => {
        const svg = document.querySelector('#charts svg');
        const axis = svg.querySelector('line');
        const rects = [...svg.querySelectorAll('rect')].map((r) => [+r.getAttribute('x'),
            +r.getAttribute('x') + +r.getAttribute('width')]);
        return { left: +axis.getAttribute('x1'), right: +axis.getAttribute('x2'), rects };
    }""")
    assert len(edges["rects"]) == 240
    assert min(a for a, _ in edges["rects"]) >= edges["left"] - 0.01
    assert max(b for _, b in edges["rects"]) <= edges["right"] + 0.01
    assert edges["rects"][-1][1] == pytest.approx(edges["right"], abs=0.01)


def test_the_debrief_counts_one_or_none_in_the_singular_in_french(tmp_path: Path) -> None:
    """The team board's debrief read "0 appels · 0 rendez-vous · 1 moments signalés" (demo
    floor, equipe-a, one moment flagged): French counts none and one in the singular, English
    none in the plural."""
    import re

    from fastapi.testclient import TestClient

    from dashboard.app import create_app
    from tests._fixtures_dashboard import client_login, csrf_of

    settings = make_settings(tmp_path)
    db = store.open_db(settings.db_path)
    try:
        schema.ensure_schema(db)
        schema.import_inventory(db, [{"box": "box-a", "seat": "A1", "agent": "agent-x",
                                      "team": "team-x"}], site=settings.site)
        with db.conn:
            db.conn.execute("INSERT INTO flags (agent, box, ts, note, author, created_ts) VALUES "
                            "('agent-x', 'box-a', ?, 'accueil', 'admin', ?)",
                            (time.time() - 60, time.time()))
    finally:
        db.conn.close()

    def debrief(page: str) -> str:
        found = re.search(r'<p id="debrief">(.*?)\n', page, re.S)
        assert found is not None
        return re.sub(r"<[^>]+>", "", found.group(1)).strip()

    with TestClient(create_app(settings, start_ingest=False), base_url="https://testserver",
                    follow_redirects=False) as c:
        client_login(c)
        french = debrief(c.get("/teams/team-x").text)
        c.post("/lang", data={"lang": "en", "csrf": csrf_of(c.get("/teams/team-x").text)})
        english = debrief(c.get("/teams/team-x").text)
    assert french == "0 appel · 0 rendez-vous · 1 moment signalé"
    assert english == "0 calls · 0 meetings · 1 flagged moment"


def test_an_error_page_gives_its_detail_in_the_page_s_language(
        browser_page: Any, org_server: Any) -> None:
    """An agent out of reach on a French page reads "404 · agent introuvable", where it read the
    API's "agent not found"; the same page in English keeps the API's words; the status stays."""
    server, _ = org_server
    page = browser_page
    browser_login(page, server.url)
    page.goto(server.url + "/agents/nobody")
    assert page.locator("html").get_attribute("lang") == "fr"
    assert page.locator("#error-detail").inner_text() == "agent introuvable"
    assert "· 404 ·" in page.locator(".error-page").inner_text()
    page.click("#lang-switch")
    page.wait_for_url("**/agents/nobody")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator("#error-detail").inner_text() == "agent not found"


def test_one_supervisor_visit_is_one_line_of_the_agents_audit_list(
        org_server: tuple[DashboardServer, dict[str, Any]], chromium: Any) -> None:
    """A supervisor opening the agent's page once writes three entries (the page, its charts'
    metrics, its live stream): the agent reads them as one visit, with what it loaded, not as
    three separate reads; the summary still counts each kind. The agent reads it as their page
    ("votre page"), an admin as the agent's page: never the jargon "la vue agent"."""
    from tests._fixtures_dashboard import USER_PASSWORD

    server, data = org_server
    sup = chromium.new_context(locale="fr-FR")
    try:
        page = sup.new_page()
        browser_login(page, server.url, "sup-a", USER_PASSWORD, data["secrets"]["sup-a"])
        page.goto(server.url + "/agents/agent-a1")
        page.wait_for_selector("body[data-charts-ready='1'][data-stream-ready='1']")
    finally:
        sup.close()
    agent = chromium.new_context(locale="fr-FR")
    try:
        page = agent.new_page()
        browser_login(page, server.url, "amina", USER_PASSWORD, landing="/me")
        entries = page.locator("#audit-list .audit-entry")
        assert entries.count() == 1, page.inner_text("#audit-list")
        assert entries.first.inner_text().endswith(
            "sup-a (Superviseur) a ouvert votre page, avec vos graphiques et votre suivi en direct")
        assert page.locator("#audit-summary .audit-summary-row").count() == 3
        assert "vue agent" not in page.inner_text("body")
        # the counts say what they count: not a bare "(3 / 3)" over a list of one line
        assert page.locator("#audit-count").inner_text() == \
            "(3 entrées du journal, regroupées par visite en 1 ligne)"
        assert page.locator("#audit-summary th").nth(2).inner_text() == "Nombre de fois"
    finally:
        agent.close()
    admin = chromium.new_context(locale="fr-FR")
    try:  # an admin reading the same log on the agent's page: the agent's page, not "la vue"
        page = admin.new_page()
        browser_login(page, server.url)
        page.goto(server.url + "/agents/agent-a1")
        assert page.locator("#audit-list .audit-entry").first.inner_text().endswith(
            "sup-a (Superviseur) a ouvert la page de l'agent, avec ses graphiques et son suivi "
            "en direct")
        page.goto(server.url + "/audit")
        assert "vue agent" not in page.inner_text("body")
        assert page.locator(".audit-entry", has_text="a ouvert la page de l'agent").count() >= 1
    finally:
        admin.close()


def test_an_agent_page_whose_agent_is_gone_says_so_and_stops_retrying(
        browser_page: Any, org_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Yanis's page stays open on the supervisor's screen while an admin erases him: the page's
    stream is refused from then on (404). The page kept showing his last live state and asked the
    stream again every 5 s, for ever, without a word; it now says he is gone, shows no live state
    and stops asking."""
    from dashboard import retention
    from dashboard.routes import stream
    from tests._fixtures_dashboard import USER_PASSWORD

    monkeypatch.setattr(stream, "KEEPALIVE_S", 0.2)  # the open stream checks its scope at once
    monkeypatch.setattr(stream, "SCOPE_REFRESH_S", 0.0)
    server, data = org_server
    page = browser_page
    browser_login(page, server.url, "sup-a", USER_PASSWORD, data["secrets"]["sup-a"])
    page.clock.install()  # the page's own timers run on a clock the test can move
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/api/stream?agent=" in r.url else None)
    page.goto(server.url + "/agents/agent-a2")
    page.wait_for_selector("body[data-charts-ready='1'][data-stream-ready='1']")
    assert page.locator("#agent-gone").count() == 0
    db = store.open_db(server.settings.db_path)
    try:
        retention.erase_agent(db, "agent-a2")
    finally:
        db.conn.close()
    gone = page.locator("#agent-gone")
    gone.wait_for(timeout=10_000)
    assert gone.inner_text() == ("Cet agent a été retiré ou n'est plus dans votre périmètre : "
                                 "cette page ne se met plus à jour.")
    assert gone.get_attribute("role") == "alert"
    assert page.locator("#live-state").inner_text() == "—"
    before = len(asked)
    page.clock.run_for(60_000)  # a minute of the page's timers: no stream asked again
    page.evaluate("fetch('/api/me').then((r) => r.status)")
    assert len(asked) == before
    assert page.locator("#live-state").inner_text() == "—"


def test_an_agents_page_left_open_when_they_are_erased_lands_on_a_login_page_that_says_why(
        browser_page: Any, org_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Amina's own page stays open while an admin erases her: her session goes with her account,
    and the page sent her to the login form, which said nothing of why she was there. The login
    page now says the session ended, and that the account may have been removed; a fresh visit
    to it, or a login refused after it, does not say so."""
    from dashboard import retention
    from dashboard.routes import stream
    from tests._fixtures_dashboard import USER_PASSWORD

    monkeypatch.setattr(stream, "KEEPALIVE_S", 0.2)  # the open stream checks its session at once
    monkeypatch.setattr(stream, "SCOPE_REFRESH_S", 0.0)
    server, _ = org_server
    page = browser_page
    browser_login(page, server.url, "amina", USER_PASSWORD, landing="/me")
    page.wait_for_selector("body[data-charts-ready='1'][data-stream-ready='1']")
    db = store.open_db(server.settings.db_path)
    try:
        retention.erase_agent(db, "agent-a1")
    finally:
        db.conn.close()
    page.wait_for_url("**/login*", timeout=10_000)
    ended = ("Votre session a pris fin : reconnectez-vous. Si votre identifiant est refusé, "
             "votre compte a pu être retiré ou désactivé : adressez-vous à votre responsable.")
    assert page.locator("#login-ended").inner_text() == ended
    assert page.locator("#login-ended").get_attribute("role") == "status"
    page.goto(server.url + "/me")  # a page asked with the ended session's cookie: the same
    page.wait_for_url("**/login*")
    assert page.locator("#login-ended").inner_text() == ended
    page.fill("#username", "amina")
    page.fill("#password", USER_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert page.locator(".error").inner_text() == "Identifiant ou mot de passe incorrect."
    assert page.locator("#login-ended").count() == 0
    page.context.clear_cookies()
    page.goto(server.url + "/login")
    assert page.locator("#login-ended").count() == 0


def test_a_refused_campaign_form_keeps_what_was_typed_and_says_why_beside_it(
        browser_page: Any, org_server: Any) -> None:
    """Supervisor A types a campaign whose two variants share a name, then one whose id is taken.
    The first landed on the generic error page ("Formulaire incomplet ou invalide"), whose
    "Retour" gave an empty form; the second came back with every field emptied. Both now come
    back to the form, filled as typed, with the reason above it."""
    from tests._fixtures_dashboard import USER_PASSWORD

    server, data = org_server
    page = browser_page
    browser_login(page, server.url, "sup-a", USER_PASSWORD, data["secrets"]["sup-a"])
    variants = "Question | Comment gérez-vous vos salons ?\nQuestion | Et vos stands ?"
    for campaign, why in (
            ("salon-lille", "Campagne non créée : les variantes doivent avoir des noms "
                            "différents."),
            ("camp-a", "Campagne non créée : cet identifiant de campagne est déjà pris.")):
        page.goto(server.url + "/campaigns")
        page.fill("#campaign-id", campaign)
        page.fill("#campaign-name", "Salon de Lille")
        page.fill("#campaign-variants", variants)
        page.click("#campaign-submit")
        page.wait_for_load_state()
        assert page.url == server.url + "/campaigns"
        error = page.locator("#new-campaign #campaign-error")
        assert error.inner_text() == why
        assert error.get_attribute("role") == "alert"
        assert page.input_value("#campaign-id") == campaign
        assert page.input_value("#campaign-name") == "Salon de Lille"
        assert page.input_value("#campaign-variants") == variants
        assert page.input_value("#campaign-team") == "team-a"
        variants = "Question | Comment gérez-vous vos salons ?\nBénéfice | Nous faisons gagner ..."


def test_a_refused_variant_keeps_what_was_typed_and_says_why_beside_it(
        browser_page: Any, org_server: Any) -> None:
    """A variant named as one the campaign has already went to the generic error page, whose
    "Retour" gave the campaign with the variant's text lost: it now comes back to the campaign,
    the form filled as typed and the reason above it."""
    from tests._fixtures_dashboard import USER_PASSWORD

    server, data = org_server
    page = browser_page
    browser_login(page, server.url, "sup-a", USER_PASSWORD, data["secrets"]["sup-a"])
    page.goto(server.url + "/campaigns/camp-a")
    page.fill("#add-variant input[name=name]", "Question ouverte")
    page.fill("#add-variant input[name=text]", "Comment choisissez-vous vos salons ?")
    page.click("#add-variant button")
    page.wait_for_load_state()
    error = page.locator("#campaign-actions #variant-error")
    assert error.inner_text() == "Variante non ajoutée : une variante porte déjà ce nom."
    assert error.get_attribute("role") == "alert"
    assert page.input_value("#add-variant input[name=name]") == "Question ouverte"
    assert page.input_value("#add-variant input[name=text]") == \
        "Comment choisissez-vous vos salons ?"
    assert page.locator("#variants tr.variant").count() == 2  # the campaign, as it stands
    page.fill("#add-variant input[name=name]", "Salon voisin")
    page.click("#add-variant button")
    page.wait_for_url("**/campaigns/camp-a")
    assert page.locator("#variants tr.variant").count() == 3


def test_french_pages_write_decimals_with_a_comma(browser_page: Any, org_server: Any) -> None:
    """A French page wrote a call's length "3.0 min" and a variant's meeting rate "30.0 %" with
    the English decimal point: they read "3,0 min" and "30,0 %", "3.0 min" in English."""
    from tests._fixtures_dashboard import USER_PASSWORD

    server, data = org_server
    page = browser_page
    browser_login(page, server.url, "sup-a", USER_PASSWORD, data["secrets"]["sup-a"])
    page.goto(server.url + "/agents/agent-a1")
    assert page.locator("#calls tr.call td").nth(2).inner_text() == "3,0 min"
    page.goto(server.url + "/campaigns/camp-a")
    row = page.locator("#variants tr.variant").first
    assert row.locator("td.rate").inner_text() == "30,0 %"
    assert row.locator("td").nth(3).inner_text() == "16,7 – 47,9 %"
    page.click("#lang-switch")
    page.wait_for_url("**/campaigns/camp-a")
    assert page.locator("#variants tr.variant td.rate").first.inner_text() == "30.0 %"
    page.goto(server.url + "/agents/agent-a1")
    assert page.locator("#calls tr.call td").nth(2).inner_text() == "3.0 min"


# ------------------------------------------------------------------ the coaching forms
def test_a_goal_named_only_with_spaces_is_refused_beside_its_labelled_form(
        browser_page: Any, org_server: Any) -> None:
    """Supervisor A names a goal with three spaces: the browser's "required" lets it through and
    it was saved as a goal without a name (an empty bold line on the agent's page). It now comes
    back to the agent's page, the form as typed and the reason above it; its fields are named by
    visible labels, not only by a placeholder that disappears once typed in."""
    from tests._fixtures_dashboard import USER_PASSWORD

    server, data = org_server
    page = browser_page
    browser_login(page, server.url, "sup-a", USER_PASSWORD, data["secrets"]["sup-a"])
    page.goto(server.url + "/agents/agent-a1")
    form = page.locator("#goal-form")
    name = form.get_by_label("Nom de l'objectif")
    metric = form.get_by_label("Mesure")
    assert name.get_attribute("name") == "label" and metric.get_attribute("name") == "metric"
    name.fill("   ")
    metric.select_option("near_speech_ratio")
    form.get_by_label("Sens").select_option("up")
    form.locator("button[type=submit]").click()
    page.wait_for_load_state()
    error = page.locator("#goals #goal-error")
    assert error.inner_text() == "Objectif non fixé : donnez-lui un nom."
    assert error.get_attribute("role") == "alert"
    assert page.locator("#goal-form select[name=metric]").input_value() == "near_speech_ratio"
    assert page.locator("#goal-form select[name=direction]").input_value() == "up"
    assert page.locator("#goal-form input[name=label]").input_value() == "   "
    db = store.open_db(server.settings.db_path)
    try:
        assert db.conn.execute("SELECT count(*) FROM goals WHERE agent = 'agent-a1'"
                               ).fetchone() == (0,)
    finally:
        db.conn.close()
    page.locator("#goal-form input[name=label]").fill("laisser parler")
    page.locator("#goal-form button[type=submit]").click()
    page.wait_for_url("**/agents/agent-a1#goals")
    assert page.locator("#goals .goal strong").all_inner_texts() == ["laisser parler"]
    assert page.locator("#goal-error").count() == 0


def test_a_moment_flagged_without_a_note_reads_as_such_not_as_an_empty_line(
        chromium: Any, org_server: Any) -> None:
    """A supervisor may mark a moment to come back to without writing anything: it is kept, and
    the agent (their page, its chart's marker) and the team board say it has no note, where they
    read "14:03 —  par sup-a" and "agent-a1 : " with nothing after."""
    from tests._fixtures_dashboard import USER_PASSWORD

    server, data = org_server
    sup = chromium.new_context(locale="fr-FR")
    try:
        page = sup.new_page()
        browser_login(page, server.url, "sup-a", USER_PASSWORD, data["secrets"]["sup-a"])
        page.goto(server.url + "/agents/agent-a1")
        page.wait_for_selector("body[data-charts-ready='1']")
        assert page.locator("#flag-form").get_by_label("Note (facultative)").input_value() == ""
        page.check("#flag-form input[name=shared]")
        page.click("#flag-submit")
        page.wait_for_url("**/agents/agent-a1#flags")
        assert page.locator("#flag-list .flag").count() == 1
        page.goto(server.url + "/teams/team-a")
        shared = page.locator("section:has(h2:text-is('Appels remarquables')) li").first
        assert shared.inner_text().endswith("Amina Diallo : (sans note)"), shared.inner_text()
    finally:
        sup.close()
    agent = chromium.new_context(locale="fr-FR")
    try:
        page = agent.new_page()
        browser_login(page, server.url, "amina", USER_PASSWORD, landing="/me")
        page.wait_for_selector("body[data-charts-ready='1']")
        flag = page.locator("#flag-list .flag").first
        assert flag.locator(".flag-note").inner_text() == "(sans note)"
        assert " —  " not in flag.inner_text()
        assert page.locator("#charts .flag-marker title").first.text_content() == \
            "moment signalé (sans note)"
    finally:
        agent.close()


def test_the_team_board_names_the_agent_of_a_remarkable_call(
        browser_page: Any, org_server: Any) -> None:
    """"Appels remarquables" named the agent by id ("agent-a1 : bel accueil") where the board's
    progress table above, the floor and the agent page name her (Amina Diallo); an agent without
    a name is still named by id. The link still opens her flags."""
    server, _ = org_server
    db = store.open_db(server.settings.db_path)
    try:
        schema.import_inventory(db, [{"box": "box-a3", "seat": "A3", "agent": "agent-a3",
                                      "team": "team-a"}], site=server.settings.site)
        with db.conn:
            for agent, note, ago_s in (("agent-a1", "bel accueil", 50), ("agent-a3", "relance", 40)):
                db.conn.execute("INSERT INTO flags (agent, box, ts, note, author, created_ts, "
                                "shared) VALUES (?, 'box-a1', ?, ?, 'sup-a', ?, 1)",
                                (agent, time.time() - ago_s, note, time.time()))
    finally:
        db.conn.close()
    page = browser_page
    browser_login(page, server.url)
    page.goto(server.url + "/teams/team-a")
    shared = page.locator("section:has(h2:text-is('Appels remarquables')) li")
    texts = [t.split(" — ", 1)[1] for t in shared.all_inner_texts()]
    assert texts == ["agent-a3 : relance", "Amina Diallo : bel accueil"]
    link = shared.nth(1).locator("a")
    assert link.get_attribute("href") == "/agents/agent-a1#flags"


def test_the_agent_page_pages_through_calls_older_than_its_fifty(
        browser_page: Any, org_server: Any) -> None:
    """Amina has 70 calls: her page listed the latest 50 and said nothing of the other 20 (only
    the CSV export had them), so a supervisor could neither see nor tag them. The page says
    which of how many it lists and pages back through the older ones; an outcome tagged there
    comes back to its call on that page."""
    server, _ = org_server
    db = store.open_db(server.settings.db_path)
    try:
        with db.conn:
            first = time.time() - 40 * 86400
            for k in range(40):  # 40 calls before the seeded 30, a day apart
                db.conn.execute("INSERT INTO calls (agent, box, start_ts, end_ts, campaign) "
                                "VALUES ('agent-a1', 'box-a1', ?, ?, 'camp-a')",
                                (first + k * 86400, first + k * 86400 + 120))
        oldest = db.conn.execute("SELECT id FROM calls WHERE agent = 'agent-a1' "
                                 "ORDER BY start_ts LIMIT 1").fetchone()[0]
    finally:
        db.conn.close()
    page = browser_page
    browser_login(page, server.url)
    page.goto(server.url + "/agents/agent-a1")
    assert page.locator("tr.call").count() == 50
    assert page.locator("#calls-range").inner_text() == \
        "Appels 1 à 50 sur 70 (tous dans l'export CSV)"
    assert page.locator(f"tr.call[data-call='{oldest}']").count() == 0
    page.click("#calls-next")
    page.wait_for_url("**/agents/agent-a1?calls_before=*#calls")
    assert page.locator("tr.call").count() == 20
    assert page.locator("#calls-range").inner_text() == \
        "Appels 51 à 70 sur 70 (tous dans l'export CSV)"
    assert page.locator("#calls-next").count() == 0
    page.click("#calls-older summary")  # the page's latest 10 shown, its other 10 a tap away
    row = page.locator(f"tr.call[data-call='{oldest}']")
    row.locator("select[name=outcome]").select_option("meeting")
    row.locator("button[type=submit]").click()
    page.wait_for_url(f"**/agents/agent-a1?calls_before=*#call-{oldest}")
    assert row.locator("select[name=outcome]").input_value() == "meeting"
    assert row.is_visible()
    page.click("#calls-newer")
    page.wait_for_url("**/agents/agent-a1#calls")
    assert page.locator("#calls-range").inner_text().startswith("Appels 1 à 50 sur 70")


def test_on_a_phone_the_metrics_without_a_measurement_are_folded_under_their_count(
        chromium: Any, org_server: Any) -> None:
    """On a 390 px phone "Sans mesure sur cette période" listed every metric the box did not
    measure, 570 px of a 1,256 px shift panel, between the charts and the cues. It is folded,
    its count in its title; opened, each reason and its metrics wrap within the panel, and stay
    open once the charts are drawn again (a replayed moment, back to live). On a laptop it is
    open from the start."""
    server, _ = org_server
    db = store.open_db(server.settings.db_path)
    try:
        unmeasured = len(analytics.metric_names(db)) - 2  # the seeded rows: both speech ratios
    finally:
        db.conn.close()
    context = chromium.new_context(viewport={"width": 390, "height": 844}, locale="fr-FR")
    try:
        page = context.new_page()
        browser_login(page, server.url)
        page.goto(server.url + "/agents/agent-a1")
        page.wait_for_selector("body[data-charts-ready='1']")
        without = page.locator("#charts-without-data")
        assert without.evaluate("d => d.tagName") == "DETAILS"
        assert without.evaluate("d => d.open") is False
        height_px = without.evaluate("d => d.offsetHeight")
        assert height_px < 40, height_px
        summary = without.locator("summary")
        assert summary.inner_text() == f"Sans mesure sur cette période ({unmeasured})"
        assert without.locator(".metric").count() == unmeasured
        summary.click()
        reasons = without.locator("li")
        assert reasons.first.is_visible()
        assert reasons.first.inner_text().startswith("Agent — ")
        assert without.evaluate("d => d.scrollWidth <= d.clientWidth")
        assert reasons.first.evaluate("li => parseFloat(getComputedStyle(li).fontSize)") >= 12
        page.evaluate("document.body.dataset.chartsReady = '0'")
        page.locator("#cue-list .cue-badge").first.click()  # a replayed moment
        page.wait_for_selector("body[data-charts-ready='1']")
        page.evaluate("document.body.dataset.chartsReady = '0'")
        page.click("#back-live")
        page.wait_for_selector("body[data-charts-ready='1']")
        assert page.locator("#charts-without-data").evaluate("d => d.open") is True
        page.set_viewport_size({"width": 1280, "height": 800})
        page.reload()
        page.wait_for_selector("body[data-charts-ready='1']")
        assert page.locator("#charts-without-data").evaluate("d => d.open") is True
    finally:
        context.close()


def _axis(page: Any, caption: str) -> tuple[str, str]:
    """The (top, bottom) value labels of the agent page's chart captioned ``caption``."""
    texts = page.locator("#charts figure", has=page.locator("figcaption", has_text=caption))
    labels = [t.text_content() or "" for t in texts.locator("svg text").all()]
    return labels[2], labels[3]  # after the two times of the time axis


def test_chart_axes_never_count_below_zero_and_write_decimals_in_the_pages_language(
        chromium: Any, tmp_path: Path) -> None:
    """A minute in which the box counted no breath: its flat zero line was labelled 1 and -1
    ("Respirations -1 /min"), and a speaking rate's axis read "4.7" on a French page. A flat zero
    now spans 0 upwards (its metric's least span), a flat negative level keeps its sign, and the
    numbers follow the page."""
    settings = make_settings(tmp_path)
    now = time.time()
    bodies = [{"window_s": 1.0, "t_start": float(k), "talk_state": "agent",
               "near_talking": True, "far_talking": False, "near_speech_ratio": 0.6,
               "near_breaths_per_min": 0.0, "near_rate_syl_s": 4.2 + 0.5 * (k % 2),
               "near_level_dbfs": -30.0} for k in range(60)]
    _agent_a_with_metrics(settings, bodies, now - 60, now)
    breaths = registry.describe("near_breaths_per_min", "fr")["label"]
    rate = registry.describe("near_rate_syl_s", "fr")["label"]
    level = registry.describe("near_level_dbfs", "fr")["label"]
    context = chromium.new_context(locale="en-US")  # the page's language counts, not the browser's
    try:
        page = context.new_page()
        with DashboardServer(settings, start_ingest=False) as server:
            browser_login(page, server.url)
            page.goto(server.url + "/agents/agent-a")
            page.wait_for_selector("body[data-charts-ready='1']")
            french = (_axis(page, breaths), _axis(page, rate), _axis(page, level))
            page.click("#lang-switch")
            page.wait_for_url("**/agents/agent-a")
            page.wait_for_selector("body[data-charts-ready='1']")
            english = _axis(page, "Agent — Speech rate")
    finally:
        context.close()
    # each spans at least its registry.CHART_MIN_SPAN: 10 breaths/min, 2 syl/s, 10 dB
    assert french == (("10", "0"), ("5,45", "3,45"), ("-25", "-35")), french
    assert english == ("5.45", "3.45"), english


def _a_long_history(server: Any) -> tuple[int, int]:
    """Amina with 150 calls (120 a day apart before the seeded 30) and 150 entries of sup-a's
    reads in her audit log: the ids of the 50th newest call and of the 100th newest entry, the
    ``calls_before`` and ``audit_before`` of each list's second page."""
    db = store.open_db(server.settings.db_path)
    try:
        with db.conn:
            first = time.time() - 130 * 86400
            for k in range(120):
                db.conn.execute("INSERT INTO calls (agent, box, start_ts, end_ts, campaign) "
                                "VALUES ('agent-a1', 'box-a1', ?, ?, 'camp-a')",
                                (first + k * 86400, first + k * 86400 + 120))
            for k in range(150):
                db.conn.execute("INSERT INTO audit_log (ts, actor, actor_role, agent, action, "
                                "detail) VALUES (?, 'sup-a', 'supervisor', 'agent-a1', "
                                "'read_goals', '{}')", (first + k * 60,))
        calls = db.conn.execute("SELECT id FROM calls WHERE agent = 'agent-a1' "
                                "ORDER BY start_ts DESC, id DESC LIMIT 1 OFFSET 49").fetchone()[0]
        entry = db.conn.execute("SELECT id FROM audit_log WHERE agent = 'agent-a1' "
                                "ORDER BY id DESC LIMIT 1 OFFSET 99").fetchone()[0]
    finally:
        db.conn.close()
    return int(calls), int(entry)


def test_the_language_switch_keeps_the_page_of_calls_and_of_the_audit_log_being_read(
        browser_page: Any, org_server: Any) -> None:
    """An admin reading Amina's calls 51 to 100 and the second page of her audit log switched to
    English and was back on the first page of each (the switch went back to the bare path). It
    keeps the pagings' places, and only them: any other parameter of the address is dropped."""
    server, _ = org_server
    calls_before, audit_before = _a_long_history(server)
    page = browser_page
    browser_login(page, server.url)
    page.goto(f"{server.url}/agents/agent-a1?calls_before={calls_before}"
              f"&audit_before={audit_before}&next=//example.com&lang=en")
    assert page.locator("#calls-range").inner_text() == \
        "Appels 51 à 100 sur 150 (tous dans l'export CSV)"
    shown = page.locator(".audit-entry time").first.get_attribute("data-ts")
    page.click("#lang-switch")
    page.wait_for_load_state()
    assert page.url == (f"{server.url}/agents/agent-a1?calls_before={calls_before}"
                        f"&audit_before={audit_before}")
    assert page.locator("#calls-range").inner_text() == "Calls 51 to 100 of 150 (all in the CSV export)"
    assert page.locator(".audit-entry time").first.get_attribute("data-ts") == shown


def test_the_calls_and_the_audit_log_page_back_one_page_and_keep_each_other_s_place(
        browser_page: Any, org_server: Any) -> None:
    """Amina's 150 calls and 150 audit entries, read by an admin: "Plus anciennes" of the audit
    log went back to calls 1 to 50, "Plus anciens" of the calls to the audit log's first page, an
    outcome tagged there did too, and from calls 101 to 150 the only way back was "← Les plus
    récents", to calls 1 to 50. Each paging now keeps the other's place, and each steps back
    one page ("← Plus récents"), its first page a link away once it is two or more back."""
    server, _ = org_server
    calls_2, audit_2 = _a_long_history(server)
    page = browser_page
    browser_login(page, server.url)
    page.goto(server.url + "/agents/agent-a1")

    def place() -> tuple[str, str, str]:
        """The calls listed, the address's query and the audit log's first entry shown."""
        query = urlsplit(page.url).query
        first = page.locator(".audit-entry time").first.get_attribute("data-ts") or ""
        return page.locator("#calls-range").inner_text().split(" (")[0], query, first

    newest_entry = place()[2]
    page.click("#audit-older")
    page.wait_for_url(f"**?audit_before={audit_2}#audit")
    older_entry = place()[2]
    assert older_entry != newest_entry
    page.click("#calls-next")
    page.click("#calls-next")
    page.wait_for_url("**#calls")
    calls_3 = int(parse_qs(urlsplit(page.url).query)["calls_before"][0])
    assert place() == ("Appels 101 à 150 sur 150",
                       f"calls_before={calls_3}&audit_before={audit_2}", older_entry)
    assert page.locator("#calls-next").count() == 0
    form_next = page.locator("tr.call input[name=next]").first.input_value()
    assert form_next.startswith(f"/agents/agent-a1?calls_before={calls_3}&audit_before={audit_2}#")
    page.click("#calls-newer")
    page.wait_for_url(f"**?calls_before={calls_2}&audit_before={audit_2}#calls")
    assert place()[0] == "Appels 51 à 100 sur 150"
    assert page.locator("#calls-latest").count() == 0  # one back is the first page
    page.click("#calls-newer")
    page.wait_for_url(f"**/agents/agent-a1?audit_before={audit_2}#calls")
    assert place() == ("Appels 1 à 50 sur 150", f"audit_before={audit_2}", older_entry)
    assert page.locator("#calls-newer").count() == 0
    page.goto(f"{server.url}/agents/agent-a1?calls_before={calls_3}")
    page.click("#calls-latest")  # from the third page, straight to the first
    page.wait_for_url("**/agents/agent-a1#calls")
    assert place()[0] == "Appels 1 à 50 sur 150"
    page.goto(f"{server.url}/agents/agent-a1?calls_before={calls_2}&audit_before={audit_2}")
    page.click("#audit-newer")  # the page that ends at the entry this one starts after
    page.wait_for_url("**#audit")
    assert place()[0] == "Appels 51 à 100 sur 150"
    assert parse_qs(urlsplit(page.url).query)["calls_before"] == [str(calls_2)]
    db = store.open_db(server.settings.db_path)
    try:
        ts = db.conn.execute("SELECT ts FROM audit_log WHERE id = ?", (audit_2,)).fetchone()[0]
    finally:
        db.conn.close()
    assert float(page.locator(".audit-entry time").last.get_attribute("data-ts") or 0) == ts


def test_the_coaching_forms_and_their_error_pages_keep_both_pagings_and_switch_language(
        browser_page: Any, org_server: Any) -> None:
    """An admin on Amina's calls 51 to 100 and her audit log's second page flagged a moment, set a
    goal or had one refused: each came back to the first page of both lists (the redirect went to
    the bare path); the refused goal's page linked its pagings, and its language switch went, to
    the form's POST-only address (an error page, 404), as did an error page's after a failed form.
    Each now comes back to the page with both places kept, and so do its links and switch."""
    server, _ = org_server
    calls_2, audit_2 = _a_long_history(server)
    here = f"/agents/agent-a1?calls_before={calls_2}&audit_before={audit_2}"
    page = browser_page
    browser_login(page, server.url)

    def on_page_two(fragment: str) -> None:
        """At ``here`` + ``fragment``, calls 51 to 100 and the audit log's second page."""
        assert page.url == server.url + here + fragment
        assert page.locator("#calls-range").inner_text().startswith("Appels 51 à 100 sur 150")
        assert page.locator("#audit-newer").count() == 1

    page.goto(server.url + here)
    page.fill("#flag-note", "écoute")
    page.click("#flag-submit")
    page.wait_for_url("**#flags")
    on_page_two("#flags")
    page.locator("#goal-form input[name=label]").fill("laisser parler")
    page.locator("#goal-form button[type=submit]").click()
    page.wait_for_url("**#goals")
    on_page_two("#goals")
    page.locator("#goal-form input[name=label]").fill("   ")  # refused: its page comes back
    page.locator("#goal-form button[type=submit]").click()
    page.wait_for_load_state()
    assert page.locator("#goal-error").count() == 1
    assert page.locator("#calls-range").inner_text().startswith("Appels 51 à 100 sur 150")
    assert page.locator("#calls-next").get_attribute("href", timeout=0).startswith(
        "/agents/agent-a1?calls_before=")
    assert page.locator("#audit-newer").get_attribute("href", timeout=0).startswith(
        "/agents/agent-a1?")
    page.click("#lang-switch")
    page.wait_for_load_state()
    assert page.url == server.url + here
    assert page.locator("#calls-range").inner_text().startswith("Calls 51 to 100 of 150")
    page.click("#lang-switch")  # back to French
    page.wait_for_load_state()
    page.locator("#flag-ts").evaluate("e => { e.value = '1'; }")  # a failed form: 422
    with page.expect_navigation():
        page.evaluate("document.getElementById('flag-form').submit()")
    assert page.locator("#error-message").count() == 1
    assert page.locator("#error-back").get_attribute("href", timeout=0) == here
    page.click("#lang-switch")
    page.wait_for_load_state()
    assert page.url == server.url + here
    assert page.locator("#calls-range").inner_text().startswith("Calls 51 to 100 of 150")


def test_an_agent_or_team_address_with_a_trailing_slash_opens_its_page(
        browser_page: Any, org_server: Any) -> None:
    """`/agents/agent-a1/` typed by a supervisor answered 404 "Introuvable : cet élément n'existe
    pas ou n'est pas de votre périmètre" (the id took the slash: agent "agent-a1/"), and a form
    posted to `/agents/agent-a1/flags/` answered 405, while `/campaigns/` and the other pages
    redirect to their address without the slash. These do too, the form's CSRF token checked."""
    from tests._fixtures_dashboard import USER_PASSWORD

    server, data = org_server
    page = browser_page
    browser_login(page, server.url, "sup-a", USER_PASSWORD, data["secrets"]["sup-a"])
    for typed in ("/agents/agent-a1/", "/teams/team-a/", "/campaigns/"):
        answer = page.goto(server.url + typed)
        assert answer is not None and answer.status == 200, (typed, page.title())
        assert page.url == server.url + typed.rstrip("/")
    page.goto(server.url + "/agents/agent-a1")
    for csrf, note, shown in ((False, "sans jeton", "La demande n'a pas abouti"),
                              (True, "relance le prix", "relance le prix")):
        page.fill("#flag-note", note)
        page.evaluate("""([csrf]) => { const form = document.getElementById('flag-form');
            form.action = form.action.replace('/flags', '/flags/');
            if (!csrf) form.querySelector('input[name=csrf]').remove(); }""", [csrf])
        with page.expect_navigation():
            page.click("#flag-submit")
        assert shown in page.locator("main").inner_text()
        page.goto(server.url + "/agents/agent-a1")
    assert page.locator("#flag-list .flag-note").all_inner_texts() == ["relance le prix"]


def test_the_audit_scope_speaks_to_whoever_reads_it(org: Any) -> None:
    """The sentence over an agent's audit list said "votre page" to the admin reading that agent's
    page, and named only the reads (page, charts, exports, board) while the list also holds what
    was done with the agent's data and account (flags, goals, campaigns, seat, account changes).
    The agent reads "votre page ... votre compte"; the admin "la page de l'agent ... son compte"."""
    import html as html_text
    import re

    from tests._fixtures_dashboard import client, login_as

    settings, data = org

    def scope(user: str, path: str) -> str:
        with client(settings) as c:
            login_as(c, user, data)
            html = c.get(path).text
        found = re.search(r'<p class="muted small" id="audit-scope">([^<]*)</p>', html)
        assert found, f"no audit scope on {path} for {user}"
        return html_text.unescape(found.group(1))

    own = scope("amina", "/me")
    assert "votre page" in own and "votre compte" in own and "moments signalés" in own
    admin = scope("admin", "/agents/agent-a1")
    assert "votre" not in admin
    assert "la page de l'agent" in admin and "son compte" in admin


def test_an_agent_page_without_phone_system_calls_says_how_many_the_box_heard(
        dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
    """A floor without a phone system feed (the demo's): the agent page said "Aucun appel
    enregistré" under an agent who had made call after call, while the team board counted the
    calls their boxes heard start. The agent page counts them too, those of the last 24 h at the
    agent's seat."""
    import html

    import httpx

    from tests._fixtures_broker import wait_until
    from tests._fixtures_dashboard import http_login

    db = store.open_db(dashboard_server.settings.db_path)
    try:
        schema.import_inventory(db, [{"box": "box-a", "seat": "A1", "agent": "agent-x",
                                      "team": "team-x"}], site=site.site,
                                now=time.time() - 100_000)  # seated before the first call
    finally:
        db.conn.close()
    site.add_box("box-a")
    box = peer(site.box("box-a"), "box-a")
    now = time.time()
    for seq, (name, ago_s) in enumerate((("call_start", 90_000), ("call_start", 600),
                                         ("call_end", 500), ("call_start", 300))):
        box.publish(wire.topic(site.site, "box-a", "event"), wire.encode("event", {
            "v": wire.SCHEMA_VERSION, "site": site.site, "box": "box-a", "channel": "near",
            "ts": now - ago_s, "seq": seq + 1, "name": name, "t_audio_s": float(seq)}))

    def stored() -> bool:
        db = store.open_db(dashboard_server.settings.db_path)
        try:
            return db.conn.execute("SELECT count(*) FROM events").fetchone()[0] == 4
        finally:
            db.conn.close()

    wait_until(stored, "the box's four events")
    with httpx.Client(base_url=dashboard_server.url, timeout=10.0) as c:
        cookie = {"cookie": f"__Host-miroir={http_login(c)}"}
        page = c.get("/agents/agent-x", headers=cookie).text
    calls = page[page.index('id="calls"'):page.index("</section>", page.index('id="calls"'))]
    assert "Aucun appel reçu du système téléphonique (CTI)" in calls
    assert 'le boîtier de l\'agent en a détecté <strong id="calls-heard">2</strong> depuis 24 h' \
        in html.unescape(calls)


def test_a_line_chart_spans_at_least_what_a_coach_should_notice(
        browser_page: Any, org_server: Any) -> None:
    """Each line chart stretched its metric's own min..max: the demo floor's "Agent — Volume"
    spanned -25.9 to -24.9 dBFS, a 1 dB wobble drawn from top to bottom as a huge swing. A chart
    now spans at least its metric's registry.CHART_MIN_SPAN (10 dB of loudness; a share 0 to
    100 %), so that wobble fills a tenth of it; the axis labels say the span drawn."""
    assert set(registry.CHART_MIN_SPAN) == set(registry.METRICS)
    server, _ = org_server
    db = store.open_db(server.settings.db_path)
    try:
        with db.conn:  # the demo floor's figures: within a dB of -25.4 dBFS
            db.conn.execute("UPDATE metrics SET near_level_dbfs = -25.9 + (seq % 11) / 10.0")
    finally:
        db.conn.close()
    page = browser_page
    browser_login(page, server.url)
    page.goto(server.url + "/agents/agent-a1")
    page.wait_for_selector("body[data-charts-ready='1']")
    charts = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll(
            '#charts figure')].filter((f) => f.querySelector('path.series')).map((f) => {
        const svg = f.querySelector('svg');
        const ys = f.querySelector('path.series').getAttribute('d').trim().split(/[ML]/)
            .filter((s) => s.trim()).map((s) => +s.trim().split(' ')[1]);
        const labels = [...svg.querySelectorAll('text[text-anchor=end]')]
            .filter((t) => +t.getAttribute('x') < 46).map((t) => t.textContent);
        return [f.querySelector('figcaption').textContent,
                { extent: Math.max(...ys) - Math.min(...ys), labels }];
    }))""")
    plot_px = 130 - 8 - 20  # charts.js: H - PAD_T - PAD_B

    def number(text: str) -> float:
        return float(text.replace(",", ".").replace("\u2212", "-").replace("\u202f", ""))

    volume = charts["Agent — Volume (dBFS)"]
    hi, lo = (number(x) for x in volume["labels"])
    assert hi - lo == pytest.approx(10, abs=0.1) and lo <= -25.9 and hi >= -24.9
    assert volume["extent"] == pytest.approx(plot_px * 1.0 / (hi - lo), abs=1.0)
    share = charts["Agent — Temps de parole (%)"]
    assert [number(x) for x in share["labels"]] == [100, 0]


def test_the_ingest_figures_are_it_s_not_on_a_supervisor_s_floor(
        chromium: Any, org_server: Any) -> None:
    """The floor's header showed every supervisor "latence p95" and "messages", the ingest's
    figures (IT's, not a coach's). A supervisor's floor now counts seats only, its script
    unbroken; an admin's floor and the IT page still show both."""
    from tests._fixtures_dashboard import USER_PASSWORD

    server, data = org_server
    db = store.open_db(server.settings.db_path)
    try:
        auth.create_user(db, "tech", USER_PASSWORD, "it")
    finally:
        db.conn.close()
    seen = {}
    for user, password, secret, landing in (
            ("sup-a", USER_PASSWORD, data["secrets"]["sup-a"], "/"),
            ("admin", None, None, "/"), ("tech", USER_PASSWORD, None, "/it")):
        context = chromium.new_context(locale="fr-FR")
        try:
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
            if password is None:
                browser_login(page, server.url)
            else:
                browser_login(page, server.url, user, password, secret, landing=landing)
            if landing == "/":
                page.wait_for_function(
                    "document.getElementById('count-total').textContent !== '0'")
                page.wait_for_function("window.performance.getEntriesByType('resource')"
                                       ".some((e) => e.name.includes('/api/ingest/stats'))")
            seen[user] = (page.locator(".counters").inner_text(), page.locator("#lag-p95").count(),
                          page.locator("#count-messages").count(), errors)
        finally:
            context.close()
    header, lag, messages, errors = seen["sup-a"]
    assert "latence" not in header and "messages" not in header and (lag, messages) == (0, 0)
    assert not errors, errors
    for user in ("admin", "tech"):
        header, lag, messages, errors = seen[user]
        assert "latence p95" in header and "messages" in header and (lag, messages) == (1, 1)
        assert not errors, errors


def test_the_audit_page_pages_the_log_to_its_oldest_entry(org_server: Any) -> None:
    """The audit page listed the newest 500 entries of the log and no more, with no way to
    older ones: over the real server with 6,000 entries, the 5,500 oldest could not be read
    there (nor through the API, which took no ``before``). It now pages them, 500 a page, newest
    first (by id: entries of one second keep one order across a page's edge), saying which of
    how many it shows; "Plus anciennes →" leads to the next page (``?audit_before=``), "← Plus
    récentes" one back, "« Les plus récentes" to the first; the language switch keeps the page.
    Following the links, the auditor reads every entry once, the oldest last."""
    import html
    import re

    import httpx

    from tests._fixtures_dashboard import USER_PASSWORD, http_login

    server, _ = org_server
    db = store.open_db(server.settings.db_path)
    now = time.time()
    try:
        with db.conn:  # four entries a second
            db.conn.executemany(
                "INSERT INTO audit_log (ts, actor, actor_role, agent, action, detail) "
                "VALUES (?, 'sup-a', 'supervisor', 'agent-a1', 'read_metrics', '{}')",
                [(now - 7200 + k // 4, ) for k in range(6000)])
    finally:
        db.conn.close()

    def link(text: str, anchor: str) -> str | None:
        found = re.search(rf'<a id="{anchor}" href="([^"]+)"', text)
        if not found:
            return None
        address, _, fragment = html.unescape(found.group(1)).partition("#")
        assert fragment == "audit-log"  # the log, below the team means
        return address

    with httpx.Client(base_url=server.url, timeout=20.0) as c:
        cookie = {"cookie": f"__Host-miroir={http_login(c, 'auditrice', USER_PASSWORD)}"}
        db = store.open_db(server.settings.db_path)
        try:
            expected = [r[0] for r in db.conn.execute("SELECT id FROM audit_log ORDER BY id DESC")]
        finally:
            db.conn.close()
        got: list[int] = []
        addresses: list[str] = []
        url: str | None = "/audit"
        while url is not None:
            r = c.get(url, headers=cookie)
            assert r.status_code == 200, url
            ids = [int(i) for i in re.findall(r'<tr class="audit-entry" data-id="([0-9]+)"', r.text)]
            assert 0 < len(ids) <= 500
            assert f"{len(ids)} des {len(expected)} entrées du journal" in r.text
            back = link(r.text, "audit-newer")
            if addresses:
                assert back == addresses[-1]  # one page back
                assert (link(r.text, "audit-latest") == "/audit") == (len(addresses) >= 2)
                assert f'name="next" value="{url}"' in r.text  # the language switch keeps it
            else:
                assert back is None and link(r.text, "audit-latest") is None
            got += ids
            addresses.append(url)
            url = link(r.text, "audit-older")
        assert got == expected  # every entry once, newest first, the oldest last
        assert len(addresses) == -(-len(expected) // 500)
        assert c.get("/audit?audit_before=1_0", headers=cookie).status_code == 422


def test_the_agent_page_pages_its_flags_to_the_oldest(org_server: Any) -> None:
    """The agent page listed an agent's newest 100 flags and no more, with no way to older ones:
    over the real server, a supervisor on agent-a1's page with 252 flags could not reach the 152
    oldest there. It now pages them as its calls, 100 a page, newest first (by time, then id:
    flags of one moment keep one order across a page's edge), saying which of how many it shows;
    "Plus anciens →" leads to the next page (``?flags_before=``), "← Plus récents" one back,
    "« Les plus récents" to the first; the language switch keeps the page, and each page read
    is one view_agent entry, as before. Following the links, every flag is read once, the
    oldest last."""
    import html
    import re

    import httpx

    from tests._fixtures_dashboard import csrf_of, http_login

    server, data = org_server
    base = time.time() - 86400  # yesterday's: within the flags' retention
    db = store.open_db(server.settings.db_path)
    try:
        with db.conn:  # three flags a moment: the pages' edges (every 100) fall among them
            db.conn.executemany(
                "INSERT INTO flags (agent, box, ts, note, author, created_ts) "
                "VALUES ('agent-a1', 'box-a1', ?, ?, 'sup-a', ?)",
                [(base + k // 3 * 60, f"n{k}", base) for k in range(252)])
        expected = [(r[0], r[1]) for r in db.conn.execute(
            "SELECT id, ts FROM flags WHERE agent = 'agent-a1' ORDER BY ts DESC, id DESC")]
    finally:
        db.conn.close()
    total = len(expected)
    assert total > 200

    def link(text: str, anchor: str) -> str | None:
        found = re.search(rf'<a id="{anchor}" href="([^"]+)"', text)
        if not found:
            return None
        address, _, fragment = html.unescape(found.group(1)).partition("#")
        assert fragment == "flags"
        return address

    def views() -> int:
        return int(query_one(server, "SELECT count(*) FROM audit_log WHERE actor = 'sup-a' "
                                     "AND action = 'view_agent' AND agent = 'agent-a1'"))

    with httpx.Client(base_url=server.url, timeout=20.0) as c:
        session = http_login(c, "sup-a", USER_PASSWORD, data["secrets"]["sup-a"])
        cookie = {"cookie": f"__Host-miroir={session}"}
        seen_before = views()
        got: list[int] = []
        addresses: list[str] = []
        url: str | None = "/agents/agent-a1"
        page = ""
        while url is not None:
            r = c.get(url, headers=cookie)
            assert r.status_code == 200, url
            page = r.text
            ids = [int(i) for i in re.findall(r'<li class="flag" data-flag="([0-9]+)"', page)]
            assert 0 < len(ids) <= 100
            first = len(got) + 1
            assert (f'id="flags-range">Moments signalés {first} à {first + len(ids) - 1} '
                    f"sur {total}<") in page, url
            back = link(page, "flags-newer")
            if addresses:
                assert back == addresses[-1]  # one page back
                assert (link(page, "flags-latest") == "/agents/agent-a1") == (len(addresses) >= 2)
            else:
                assert back is None and link(page, "flags-latest") is None
            # the language switch keeps the page
            assert f'<input type="hidden" name="next" value="{html.escape(url)}">' in page
            got += ids
            addresses.append(url)
            url = link(page, "flags-older")
        assert got == [i for i, _ in expected]  # every flag once, newest first, the oldest last
        assert all(expected[k - 1][1] == expected[k][1] for k in (100, 200))  # edges in a moment
        assert len(addresses) == -(-total // 100) and addresses[-1].startswith(
            "/agents/agent-a1?flags_before=")
        assert views() == seen_before + len(addresses)  # one view_agent entry a page, as before
        # on the oldest page, a new flag goes to the first page (where it shows), a goal back here
        assert 'action="/agents/agent-a1/flags" class="flag-form"' in page
        assert (f'action="{html.escape(addresses[-1]).replace("/agents/agent-a1", "/agents/agent-a1/goals")}"'
                ' class="goal-form"') in page
        r = c.post("/lang", headers=cookie,
                   data={"csrf": csrf_of(page), "next": addresses[-1], "lang": "en"})
        assert (r.status_code, r.headers["location"]) == (303, addresses[-1])
        english = c.get(addresses[-1], headers=cookie).text
        assert f'id="flags-range">Flagged moments 201 to {total} of {total}<' in english
        assert link(english, "flags-older") is None and "← Newer</a>" in english
        assert c.get("/agents/agent-a1?flags_before=1_0", headers=cookie).status_code == 422


def query_one(server: Any, sql: str) -> Any:
    """The first column of the first row ``sql`` answers in the server's database."""
    db = store.open_db(server.settings.db_path)
    try:
        return db.conn.execute(sql).fetchone()[0]
    finally:
        db.conn.close()

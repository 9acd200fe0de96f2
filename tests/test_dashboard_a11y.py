"""The dashboard for a supervisor or an agent who reads it with a screen reader, the keyboard
only, or eyes that tell colours apart poorly, in Debian's chromium: contrast, names, live
regions, focus."""

from __future__ import annotations

import contextlib
import datetime
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashboard import db as store
from dashboard.app import DashboardServer
from miroir import wire
from tests._fixtures_dashboard import (
    INVENTORY,
    USER_PASSWORD,
    browser_login,
    make_settings,
    metric_row,
    seed_org,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

PAGES = ("/", "/agents/agent-a1", "/teams/team-a", "/campaigns", "/campaigns/camp-a", "/audit",
         "/it")
READY = {"/": "body[data-stream-ready='1'] .seat[data-state='offline']",
         "/agents/agent-a1": "body[data-charts-ready='1']", "/me": "body[data-charts-ready='1']"}
"""What each page draws once its scripts have run (the floor's seats, the agent's charts)."""


@pytest.fixture
def floor_server(tmp_path: Path) -> Iterator[tuple[DashboardServer, dict[str, Any]]]:
    """The seeded org served without an ingest, its seats in every talk state the floor colours:
    box-a1's agent speaks (with a fatigue index), box-a2's prospect, box-b1's box is offline;
    agent-a1 has a goal with three days of values."""
    settings = make_settings(tmp_path)
    data = seed_org(settings)
    now = time.time()
    db = store.open_db(settings.db_path)
    try:
        for row, state in zip(INVENTORY, ("agent", "prospect", "overlap"), strict=True):
            body = metric_row(settings.site, row["box"], 1000, now)
            body.update(talk_state=state, near_talking=state in ("agent", "overlap"),
                        far_talking=state in ("prospect", "overlap"))
            if state == "agent":
                body["fatigue_index"] = 62.0
            store.insert_metrics(db, body, now)
        with db.conn:
            db.conn.execute("INSERT INTO goals (agent, metric, label, direction, author, "
                            "created_ts) VALUES ('agent-a1', 'near_speech_ratio', 'laisser "
                            "parler', 'down', 'sup-a', ?)", (now,))
            for days_ago, mean in ((2, 0.61), (1, 0.55)):
                day = time.strftime("%Y-%m-%d", time.gmtime(now - days_ago * 86400))
                db.conn.execute("INSERT INTO daily_aggregates (day, agent, metric, mean, n) "
                                "VALUES (?, 'agent-a1', 'near_speech_ratio', ?, 600)",
                                (day, mean))
        offline = wire.status_message(settings.site, "box-b1", "offline", now)
        store.apply_status(db, wire.decode("status", wire.encode("status", offline)), now)
    finally:
        db.conn.close()
    with DashboardServer(settings, start_ingest=False) as server:
        yield server, data


LOW_CONTRAST = """() => {
  const rgba = (s) => (s.match(/[\\d.]+/g) || []).map(Number);
  const lin = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
  const lum = (c) => 0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2]);
  const over = (top, under) => {  // a colour of alpha top[3] laid on an opaque one
    const a = top.length > 3 ? top[3] : 1;
    return [0, 1, 2].map((i) => top[i] * a + under[i] * (1 - a));
  };
  const faded = (el) => { for (let e = el; e; e = e.parentElement) {
    if (+getComputedStyle(e).opacity < 1) return true; } return false; };
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c.length > 3 && c[3] === 0) continue;
      layers.push(c);
      if (c.length < 4 || c[3] === 1) break;
    }
    let bg = [255, 255, 255];
    for (const c of layers.reverse()) bg = over(c, bg);
    return bg;
  };
  const out = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const el = n.parentElement;
    if (!n.textContent.trim() || !el || el.closest("[hidden], template, option, script")) continue;
    const box = el.getBoundingClientRect();
    if (!box.width || !box.height || faded(el)) continue;  // faded: a seat's stale figures
    const st = getComputedStyle(el);
    const bg = background(el);
    const fg = over(rgba(el instanceof SVGElement ? st.fill : st.color), bg);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const px = parseFloat(st.fontSize), bold = +st.fontWeight >= 700;
    const need = px >= 24 || (bold && px >= 18.66) ? 3 : 4.5;
    const cls = el.className.baseVal === undefined ? el.className : el.className.baseVal;
    const text = n.textContent.trim().slice(0, 30);
    if (ratio < need) out.push(`${el.tagName.toLowerCase()}.${cls} "${text}" ${ratio.toFixed(2)}`);
  }
  return [...new Set(out)];
}"""
"""Each visible text whose colour on its background is below WCAG AA's contrast (4.5:1, 3:1
for large text), as 'tag.class "text" ratio'."""


@contextlib.contextmanager
def _as_agent(chromium: Any, server: DashboardServer) -> Iterator[Any]:
    """A French browser page logged in as the agent Amina, on her own page (/me)."""
    context = chromium.new_context(locale="fr-FR")
    try:
        page = context.new_page()
        browser_login(page, server.url, "amina", USER_PASSWORD, landing="/me")
        yield page
    finally:
        context.close()


def test_every_text_reads_at_aa_contrast_on_its_background(chromium: Any,
                                                           floor_server: Any) -> None:
    """The floor's legend wrote "Prospect parle" white on green at 3.45:1, "Chevauchement" on
    orange at 3.22:1 and "Silence" on grey at 2.50:1, the seats said so in the same green and
    orange on white, and the muted grey of help texts read 4.22:1 on the page's background and
    4.00:1 on an offline seat: every text of every page now reads at 4.5:1 at least."""
    server, _ = floor_server
    low: dict[str, list[str]] = {}
    context = chromium.new_context(locale="fr-FR", viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(server.url + "/login")
        low["/login"] = page.evaluate(LOW_CONTRAST)
        browser_login(page, server.url)
        for path in PAGES:
            page.goto(server.url + path)
            page.wait_for_selector(READY.get(path, "main"))
            low[path] = page.evaluate(LOW_CONTRAST)
    finally:
        context.close()
    with _as_agent(chromium, server) as page:
        page.wait_for_selector(READY["/me"])
        low["/me"] = page.evaluate(LOW_CONTRAST)
    bad = {p: texts for p, texts in low.items() if texts}
    assert bad == {}, "\n".join(f"{p}: {t}" for p, texts in bad.items() for t in texts)


def _metrics(site: str, box: str, seq: int, talk_state: str, in_call: bool = True) -> bytes:
    return wire.encode("metrics", {
        "v": wire.SCHEMA_VERSION, "site": site, "box": box, "ts": time.time(), "seq": seq,
        "t_start": float(seq), "window_s": 1.0, "near_speech_ratio": 0.6,
        "far_speech_ratio": 0.1, "near_talking": talk_state in ("agent", "overlap"),
        "far_talking": talk_state in ("prospect", "overlap"), "talk_state": talk_state,
        "in_call": in_call})


SPOKEN = """() => {
  window.spoken = [];
  new MutationObserver((records) => {
    for (const r of records) {
      const node = r.target.nodeType === Node.ELEMENT_NODE ? r.target : r.target.parentElement;
      const region = node && node.closest("[aria-live]");
      if (region && region.getAttribute("aria-live") !== "off") {
        window.spoken.push(region.textContent.replace(/\\s+/g, " ").trim());
      }
    }
  }).observe(document.body, { subtree: true, childList: true, characterData: true });
}"""
"""Record, as a screen reader is told it, each change inside a live region (the region's text)."""


def test_the_floor_announces_seats_and_calls_not_every_message(
        browser_page: Any, dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
    """The floor's counters were one polite live region with the count of messages received and
    the ingest's latency in it: a box in a call sends a message a second, so a screen reader was
    read the whole bar again at every one (ten messages, ten announcements) and never stopped.
    Only the seats online, the seats and the seats in a call are announced now, when they
    change: ten messages of a call already counted announce nothing."""
    page = browser_page
    browser_login(page, dashboard_server.url)
    box = peer(site.box("box-a"), "box-a")
    status = wire.status_message(site.site, "box-a", "online", time.time(), version="0.1.0")
    box.publish(wire.topic(site.site, "box-a", "status"), wire.encode("status", status),
                retain=True)
    topic = wire.topic(site.site, "box-a", "metrics")
    box.publish(topic, _metrics(site.site, "box-a", 1, "agent"))
    page.wait_for_function("() => document.getElementById('count-in-call').textContent === '1'")
    page.evaluate(SPOKEN)
    for seq in range(2, 12):
        box.publish(topic, _metrics(site.site, "box-a", seq, "agent" if seq % 2 else "prospect"))
    page.locator(".seat[data-box='box-a'] .timeline span:not([class=''])").nth(10).wait_for(
        state="attached")
    assert int(page.locator("#count-messages").inner_text()) >= 11
    assert page.evaluate("window.spoken") == []
    # a seat leaving its call is announced, once, in words
    box.publish(topic, _metrics(site.site, "box-a", 12, "silence", in_call=False))
    page.wait_for_function("() => document.getElementById('count-in-call').textContent === '0'")
    assert page.evaluate("window.spoken") == ["0 en appel"]


STATE_RECTS = "() => document.querySelectorAll('#charts svg')[0].querySelectorAll('rect').length"


def test_the_agent_s_live_page_announces_a_new_cue_and_keeps_the_keyboard_s_place(
        browser_page: Any, dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
    """Amina, with a screen reader and the keyboard, tabs to a cue of her shift on /me while her
    box sends a call: the charts' redraw (once a second while the call goes on) rebuilt the cue
    buttons and her focus fell back to the page's top (document.body), and the cue her box then
    raised appeared in the live strip unannounced. Her focus now stays on the cue she chose, and
    the new cue ("Ralentissez") is announced, once; the talk state (a change a second) is not."""
    seed_org(dashboard_server.settings)
    site.add_box("box-a1")
    page = browser_page
    browser_login(page, dashboard_server.url, "amina", USER_PASSWORD, landing="/me")
    page.wait_for_selector("body[data-charts-ready='1'][data-stream-ready='1']")
    page.evaluate(SPOKEN)
    chosen = page.locator("#cue-list button").nth(1)
    ts = chosen.get_attribute("data-ts")
    chosen.focus()
    rows_before = page.evaluate(STATE_RECTS)
    box = peer(site.box("box-a1"), "box-a1")
    for seq in range(5000, 5004):
        box.publish(wire.topic(site.site, "box-a1", "metrics"),
                    _metrics(site.site, "box-a1", seq, ("agent", "prospect")[seq % 2]))
    box.publish(wire.topic(site.site, "box-a1", "event"), wire.encode("event", {
        "v": wire.SCHEMA_VERSION, "site": site.site, "box": "box-a1", "channel": "near",
        "ts": time.time(), "seq": 6000, "name": "cue_on", "t_audio_s": 3.5, "cue": "too_fast",
        "severity": "medium", "evidence_value": 1.41, "evidence_threshold": 1.3,
        "evidence_unit": "ratio"}))
    page.wait_for_function(f"() => ({STATE_RECTS})() === {rows_before + 4}")
    page.wait_for_function("() => document.querySelectorAll('#cue-list button').length === 4")
    assert page.evaluate("() => [document.activeElement.closest('#cue-list') !== null,"
                         " document.activeElement.dataset.ts]") == [True, ts]
    assert page.evaluate("window.spoken") == ["Ralentissez"]
    # Enter replays the cue's minute: the keyboard is still on that cue
    page.keyboard.press("Enter")
    page.locator("#back-live").wait_for()
    assert page.evaluate("document.activeElement.dataset.ts") == ts
    page.focus("#back-live")
    page.keyboard.press("Enter")  # its button gone with the replay: the charts, not the top
    page.locator("#back-live").wait_for(state="detached")
    assert page.evaluate("document.activeElement.id") == "charts"


def test_each_chart_says_its_latest_value_and_the_turns_chart_its_states_in_words(
        chromium: Any, org_server: Any) -> None:
    """The agent page's charts were images named by their title only ("Agent — Temps de parole
    (%)"): a screen reader heard no value, and the turn-taking chart told the agent's, the
    prospect's, overlapping and silent stretches apart by colour alone, with no legend (green
    and orange, which a red-green colour-blind supervisor does not tell apart). Each line chart
    now says its latest value and when, and the turns chart says, in words beside it and to a
    screen reader, each state's share of the shift and the latest state."""
    import math

    server, _ = org_server
    context = chromium.new_context(locale="fr-FR")
    try:
        page = context.new_page()
        browser_login(page, server.url)
        page.goto(server.url + "/agents/agent-a1")
        page.wait_for_selector("body[data-charts-ready='1']")
        labels = page.eval_on_selector_all(
            "#charts figure", "(fs) => fs.map((f) => [f.querySelector('figcaption').textContent,"
            " f.querySelector('svg').getAttribute('aria-label'),"
            " (f.querySelector('.chart-legend') || {}).textContent])")
    finally:
        context.close()
    with _as_agent(chromium, server) as page:
        page.wait_for_selector("body[data-charts-ready='1']")
        own = page.evaluate("(document.querySelector('#charts .chart-legend') || {}).textContent")
    by_title = {title: (label, legend) for title, label, legend in labels}
    # the seeded shift: 240 one-second rows, twenty turns of 12 (6 agent, 3 prospect, 1 overlap,
    # 2 silence); the last, seq 240, is the agent's
    turns = "Agent parle 50 % · Prospect parle 25 % · Chevauchement 8 % · Silence 17 %"
    label, legend = by_title["Tours de parole"]
    assert legend == turns
    assert label.startswith("Tours de parole : " + turns.replace(" · ", ", "))
    assert "dernier état : Agent parle, à " in label and label.endswith(" UTC"), label
    assert own == turns.replace("Agent parle", "Vous parlez").replace(
        "Prospect parle", "Le prospect parle").replace("Chevauchement", "Vous parlez en même temps")
    near = round(0.35 + 0.3 * math.sin(240 / 9.0) ** 2, 3) * 100
    label, legend = by_title["Agent — Temps de parole (%)"]
    expected = f"{near:.3g}".replace(".", ",")
    assert label.startswith(f"Agent — Temps de parole (%) : dernière valeur {expected} %, à "), \
        label
    assert legend is None
    assert all("dernière valeur" in lab for t, (lab, _) in by_title.items()
               if t != "Tours de parole"), by_title


NAMED_ROLES = {"button", "link", "textbox", "combobox", "checkbox", "radio", "spinbutton",
               "slider", "meter", "progressbar", "image", "img", "listbox", "searchbox"}


def _unnamed(page: Any) -> list[str]:
    """The controls and images of the page that chromium's accessibility tree leaves unnamed
    (what a screen reader says of them: their role only), as their HTML's first 80 characters."""
    cdp = page.context.new_cdp_session(page)
    try:
        out = []
        for node in cdp.send("Accessibility.getFullAXTree")["nodes"]:
            role = node.get("role", {}).get("value")
            name = str(node.get("name", {}).get("value", "")).strip()
            if node.get("ignored") or role not in NAMED_ROLES or name:
                continue
            obj = cdp.send("DOM.resolveNode", {"backendNodeId": node["backendDOMNodeId"]})
            html = cdp.send("Runtime.callFunctionOn", {
                "objectId": obj["object"]["objectId"], "returnByValue": True,
                "functionDeclaration": "function () { return this.outerHTML.slice(0, 80); }"})
            out.append(f"{role}: {html['result']['value']}")
        return out
    finally:
        cdp.detach()


def test_every_control_and_image_of_every_page_has_a_name(chromium: Any,
                                                         floor_server: Any) -> None:
    """A screen reader said "image" and nothing more of a goal's trend on the agent page (its
    sparkline had role="img" and no name), and "meter" of a seat's fatigue on the floor (its
    label a sibling, not tied to it). Every form control, link, button, meter and image of the
    login, floor, agent, team, campaigns, audit, IT and /me pages now has a name: the trend says
    its days and its first and last values, the meter is the seat's fatigue."""
    server, _ = floor_server
    unnamed: dict[str, list[str]] = {}
    context = chromium.new_context(locale="fr-FR")
    try:
        page = context.new_page()
        page.goto(server.url + "/login")
        unnamed["/login"] = _unnamed(page)
        browser_login(page, server.url)
        for path in PAGES:
            page.goto(server.url + path)
            page.wait_for_selector(READY.get(path, "main"))
            unnamed[path] = _unnamed(page)
            if path == "/":
                meter = page.locator(".seat[data-box='box-a1'] .fatigue meter")
                assert meter.is_visible()
                fatigue = meter.get_attribute("value")
            if path == "/agents/agent-a1":
                trend = page.evaluate("document.querySelector('#goals .goal svg')"
                                      ".getAttribute('aria-label')")
    finally:
        context.close()
    with _as_agent(chromium, server) as page:
        page.wait_for_selector(READY["/me"])
        unnamed["/me"] = _unnamed(page)
    bad = {p: found for p, found in unnamed.items() if found}
    assert bad == {}, "\n".join(f"{p}: {f}" for p, found in bad.items() for f in found)
    assert fatigue == "0.62"
    # two stored days (61 %, 55 %) and today's rows (their mean)
    assert re.fullmatch(r"Agent — Temps de parole, 3 jours : de 61 % à \d\d,\d %", trend or ""), \
        trend


def test_each_page_has_its_own_title_and_the_language_it_is_written_in(
        chromium: Any, org_server: Any) -> None:
    """A screen reader announces a page by its title, and a tab is found by it: a campaign's
    comparison was titled "Campagnes — Miroir" as the list of campaigns, and the agent's own
    page "Amina Diallo — Miroir" as her supervisor's page about her. Every page's title is its
    own now, and <html lang> follows the language the reader chose (its voice reads French as
    French), as the title does; the language switch, "English" on a French page, is marked
    lang="en" (a French voice read it with French sounds)."""
    server, _ = org_server
    titles: dict[str, str] = {}
    langs: dict[str, str] = {}
    context = chromium.new_context(locale="fr-FR")
    try:
        page = context.new_page()
        page.goto(server.url + "/login")
        titles["/login"] = page.title()
        browser_login(page, server.url)
        for path in (*PAGES, "/agents/nobody"):
            page.goto(server.url + path)
            titles[path] = page.title()
            langs[path] = page.evaluate("document.documentElement.lang")
        page.goto(server.url + "/campaigns/camp-a")
        # the switch is named in the language it leads to, and marked so: a French voice read
        # "English" with French sounds
        switch_fr = page.evaluate("[...document.querySelectorAll('body [lang]')].map((e) =>"
                                  " [e.tagName, e.lang, e.textContent.trim()])")
        page.click("#lang-switch")
        page.wait_for_url("**/campaigns/camp-a")
        english = (page.title(), page.evaluate("document.documentElement.lang"))
        switch_en = page.evaluate("[document.getElementById('lang-switch').lang,"
                                  " document.getElementById('lang-switch').textContent.trim()]")
    finally:
        context.close()
    with _as_agent(chromium, server) as page:
        titles["/me"] = page.title()
        langs["/me"] = page.evaluate("document.documentElement.lang")
    assert set(langs.values()) == {"fr"}, langs
    assert len(set(titles.values())) == len(titles), titles
    assert titles["/campaigns/camp-a"] == "Salon Lyon · Campagnes — Miroir"
    assert titles["/me"] == "Mon espace — Miroir"
    assert english == ("Salon Lyon · Campaigns — Miroir", "en")
    assert switch_fr == [["BUTTON", "en", "English"]]  # the only part in another language
    assert switch_en == ["fr", "Français"]


def _names(page: Any, roles: set[str]) -> list[str]:
    """The accessible names of the page's elements of ``roles``, as chromium computes them."""
    cdp = page.context.new_cdp_session(page)
    try:
        return [str(n.get("name", {}).get("value", "")).strip()
                for n in cdp.send("Accessibility.getFullAXTree")["nodes"]
                if not n.get("ignored") and n.get("role", {}).get("value") in roles]
    finally:
        cdp.detach()


def test_each_call_s_and_each_moment_s_buttons_say_which_they_act_on(
        chromium: Any, org_server: Any) -> None:
    """A screen reader listing the agent page's buttons and fields read "Issue, Enregistrer"
    once per call (one of each for each of agent-a1's calls) and "Rejouer" once per flagged
    moment, not which call or moment each one acts on. Each now names its call or moment by its
    time, as the page shows it: "Enregistrer 27/11/2026 21:55:59 UTC", "Rejouer …"."""
    server, _ = org_server
    now = time.time()
    db = store.open_db(server.settings.db_path)
    try:
        with db.conn:
            for k, note in enumerate(("débit élevé", "bonne reformulation")):
                db.conn.execute("INSERT INTO flags (agent, box, ts, note, author, created_ts) "
                                "VALUES ('agent-a1', 'box-a1', ?, ?, 'admin', ?)",
                                (now - 100 + k * 30, note, now))
    finally:
        db.conn.close()
    context = chromium.new_context(locale="fr-FR")
    try:
        page = context.new_page()
        browser_login(page, server.url)
        page.goto(server.url + "/agents/agent-a1")
        page.wait_for_selector("body[data-charts-ready='1']")
        page.click("#calls-older summary")  # the older calls too
        names = _names(page, {"button", "combobox"})
        first_call = page.locator("#calls tr.call").first
        shown = first_call.locator("time").inner_text()
    finally:
        context.close()
    repeated = sorted({n for n in names if names.count(n) > 1})
    assert repeated == []
    assert f"Enregistrer {shown}" in names and f"Issue {shown}" in names
    assert sum(n.startswith("Rejouer ") for n in names) == 2


def test_the_it_page_does_not_reload_under_a_keyboard_user_and_its_refresh_can_be_stopped(
        chromium: Any, org_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The IT page reloaded itself every 15 s (<meta http-equiv="refresh">) whatever its reader
    did: a keyboard user's focus went back to the page's top and a screen reader started the
    page over, four times a minute, with no way to stop it. It still updates itself while nobody
    is on it, never while something of it has the keyboard's focus, and a labelled switch stops
    it (kept while the tab is open)."""
    from dashboard.routes import fleet

    monkeypatch.setattr(fleet, "PAGE_REFRESH_S", 1)
    server, _ = org_server
    context = chromium.new_context(locale="fr-FR")
    try:
        page = context.new_page()
        browser_login(page, server.url)
        page.goto(server.url + "/it")
        page.evaluate("window.here = 1")  # gone with a reload
        page.wait_for_function("() => window.here === undefined", timeout=5000)  # nobody on it
        page.evaluate("window.here = 1")
        page.keyboard.press("Tab")  # the keyboard user's first step: the navigation
        focused = page.evaluate("document.activeElement.id")
        page.wait_for_function("() => window.here === undefined"
                               " || +document.body.dataset.refreshSkipped >= 2", timeout=5000)
        assert page.evaluate("[window.here, document.activeElement.id]") == [1, focused]
        switch = page.get_by_role("checkbox", name="Mise à jour automatique (toutes les 1 s)")
        switch.uncheck()
        page.evaluate("document.activeElement.blur(); window.here = 1")
        page.wait_for_function("() => +document.body.dataset.refreshSkipped >= 4", timeout=5000)
        assert page.evaluate("window.here") == 1
        page.reload()  # the choice holds for the tab
        assert not page.get_by_role("checkbox", name="Mise à jour automatique (toutes les 1 s)"
                                    ).is_checked()
    finally:
        context.close()


def test_the_first_tab_of_every_page_offers_to_skip_to_its_content(
        chromium: Any, org_server: Any) -> None:
    """A keyboard user went through the header's links, the language switch and the logout (and
    on the floor the filters) on every page before its content, with no way past: the first Tab
    now lands on "Aller au contenu", whose Enter puts the focus on the page's main content."""
    server, _ = org_server
    context = chromium.new_context(locale="fr-FR")
    landed: dict[str, tuple[str, str, str]] = {}
    try:
        page = context.new_page()
        browser_login(page, server.url)
        for path in PAGES:
            page.goto(server.url + path)
            page.keyboard.press("Tab")
            first = page.evaluate("[document.activeElement.className,"
                                  " document.activeElement.textContent.trim()]")
            assert first == ["skip-link", "Aller au contenu"], (path, first)
            page.keyboard.press("Enter")  # (an in-page link: the focus moves at once)
            landed[path] = (first[0], first[1], page.evaluate("document.activeElement.id"))
    finally:
        context.close()
    assert set(landed.values()) == {("skip-link", "Aller au contenu", "main")}, landed


def test_the_floor_s_skip_link_lands_before_its_filters(chromium: Any, floor_server: Any) -> None:
    """The floor's filters (team, campaign, pseudonymous names) and its legend sat between the
    header and <main>: "Aller au contenu" skipped them, and a keyboard user had to Tab through
    every seat's link and back round the header to reach them. They are the top of the floor's
    main content now: after the skip link, the next Tab is the team filter."""
    server, _ = floor_server
    context = chromium.new_context(locale="fr-FR")
    try:
        page = context.new_page()
        browser_login(page, server.url)
        page.wait_for_selector(READY["/"])
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "main"
        page.keyboard.press("Tab")
        after_skip = page.evaluate("[document.activeElement.id,"
                                   " document.activeElement.getAttribute('aria-label')]")
        order = []
        for _ in range(3):
            page.keyboard.press("Tab")
            order.append(page.evaluate("document.activeElement.id"))
        legend_in_main = page.evaluate("!!document.querySelector('main .legend')")
    finally:
        context.close()
    assert after_skip == ["filter-team", "Équipes"], after_skip
    assert order == ["filter-campaign", "pseudo", order[2]] and order[2] != "filter-team", order
    assert legend_in_main


def test_a_moment_is_flagged_at_a_time_chosen_with_the_keyboard_only(
        chromium: Any, org_server: Any) -> None:
    """The moment to flag was chosen by a click on a chart (mouse only) or a cue's replay
    button: a keyboard user could flag only the page's opening time or a cue's. The flag form
    has a time field, labelled "Moment" and described by the moment in full (its zone): typed
    hh:mm:ss in the reader's own zone, it is the latest such time, and the flag is stored at it;
    a time it cannot read is said so (an alert, the field invalid and focused again), never sent
    as the last moment picked."""
    from zoneinfo import ZoneInfo

    server, _ = org_server
    target = float(int(time.time()) - 90)
    clock = datetime.datetime.fromtimestamp(target, ZoneInfo("Europe/Paris"))
    context = chromium.new_context(locale="fr-FR", timezone_id="Europe/Paris")
    try:
        page = context.new_page()
        browser_login(page, server.url)
        page.goto(server.url + "/agents/agent-a1")
        page.wait_for_selector("body[data-charts-ready='1']")

        def tab_to(target_id: str) -> bool:
            """Tab (at most 300 times) until ``target_id`` has the focus."""
            for _ in range(300):
                page.keyboard.press("Tab")
                if page.evaluate("document.activeElement.id") == target_id:
                    return True
            return False

        assert tab_to("flag-at"), "no time field for the moment on the keyboard's way"
        field = page.get_by_label("Moment", exact=True)
        assert field.evaluate("e => e === document.activeElement")
        page.keyboard.press("Control+A")
        page.keyboard.type("25:61")
        assert tab_to("flag-submit")
        page.keyboard.press("Enter")
        alert = page.get_by_role("alert")
        assert alert.inner_text().startswith("Heure du moment illisible"), alert.inner_text()
        assert field.evaluate("e => e === document.activeElement && e.ariaInvalid === 'true'")
        page.keyboard.press("Control+A")
        page.keyboard.type(clock.strftime("%H:%M:%S"))
        told = " ".join(page.locator("#" + ref).inner_text()
                        for ref in (field.get_attribute("aria-describedby") or "").split())
        assert tab_to("flag-note")
        page.keyboard.type("relance trop rapide")
        assert tab_to("flag-submit")
        page.keyboard.press("Enter")
        page.wait_for_url("**/agents/agent-a1#flags")
    finally:
        context.close()
    assert clock.strftime("%H:%M:%S") in told and ("UTC+1" in told or "UTC+2" in told), told
    db = store.open_db(server.settings.db_path)
    try:
        flags = db.conn.execute("SELECT ts, note FROM flags WHERE agent = 'agent-a1' "
                                "AND author = 'admin'").fetchall()
    finally:
        db.conn.close()
    assert flags == [(target, "relance trop rapide")]

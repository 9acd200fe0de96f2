"""What a floor seat says about its box, in Debian's chromium, fed through the real site broker:
the fatigue meter, freshness, a lost headset, the "in call" counter, private mode and a planned
restart."""

from __future__ import annotations

import re
import socket
import time
from typing import Any

import pytest

from dashboard import db as store
from dashboard import fleet, i18n, schema
from dashboard.app import DashboardServer
from miroir import wire
from tests._fixtures_broker import wait_until
from tests._fixtures_dashboard import browser_login

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

LIVE_WAIT_MS = 2000  # a seat changes within 2 s of the box's publish
STALE_S = 10  # floor.js: an online box silent this long is shown as stale


class Box:
    """One box publishing its status, metrics and events to the site broker."""

    def __init__(self, site: Any, peer: Any, box: str, clock_offset_s: float = 0.0) -> None:
        self.site, self.box, self.offset = site.site, box, clock_offset_s
        self.pub = peer(site.box(box), box)
        self.seq = 0

    def now(self) -> float:
        """The box's own clock (``clock_offset_s`` off the real time)."""
        return time.time() + self.offset

    def status(self, state: str = "online", **extra: Any) -> None:
        msg = wire.status_message(self.site, self.box, state, self.now(), **extra)
        self.pub.publish(wire.topic(self.site, self.box, "status"), wire.encode("status", msg),
                         retain=True)

    def metrics(self, talk_state: str, **extra: Any) -> None:
        self.seq += 1
        body = {"v": wire.SCHEMA_VERSION, "site": self.site, "box": self.box, "ts": self.now(),
                "seq": self.seq, "t_start": float(self.seq), "window_s": 1.0,
                "near_speech_ratio": 0.7 if talk_state in ("agent", "overlap") else 0.05,
                "far_speech_ratio": 0.6 if talk_state in ("prospect", "overlap") else 0.02,
                "near_talking": talk_state in ("agent", "overlap"),
                "far_talking": talk_state in ("prospect", "overlap"), "talk_state": talk_state,
                **extra}
        self.pub.publish(wire.topic(self.site, self.box, "metrics"), wire.encode("metrics", body))

    def event(self, name: str, channel: str = "near", **extra: Any) -> None:
        self.seq += 1
        body = {"v": wire.SCHEMA_VERSION, "site": self.site, "box": self.box, "ts": self.now(),
                "seq": self.seq, "name": name, "channel": channel, "t_audio_s": float(self.seq),
                **extra}
        self.pub.publish(wire.topic(self.site, self.box, "event"), wire.encode("event", body))


def _seat(page: Any, box: str, state: str | None = None) -> Any:
    """The seat of ``box``, once it shows ``state`` when given."""
    seat = page.locator(f".seat[data-box='{box}']")
    if state:
        seat.and_(page.locator(f"[data-state='{state}']")).wait_for(timeout=LIVE_WAIT_MS)
    return seat


def _in_call(page: Any) -> str:
    return str(page.locator("#count-in-call").inner_text())


def test_fatigue_meter_shows_the_fatigue_index_on_its_0_to_1_scale(
        logged_in_page: Any, site: Any, peer: Any) -> None:
    """The box sends fatigue_phonation_min (minutes) before fatigue_index (0..100): the meter
    shows the index / 100, and nothing while the box has no index yet."""
    page = logged_in_page
    box = Box(site, peer, "box-a")
    box.status()
    # the fields in the box's own order (edge.fatigue): the phonation minutes come first
    box.metrics("agent", fatigue_phonation_min=42.5, break_suggested=False)
    seat = _seat(page, "box-a", "agent")
    assert seat.locator(".fatigue").is_hidden()  # minutes of phonation are not a fatigue level
    box.metrics("prospect", fatigue_phonation_min=42.5, fatigue_index=20.0,
                break_suggested=False)
    _seat(page, "box-a", "prospect")
    assert seat.locator(".fatigue").is_visible()
    assert seat.locator(".fatigue meter").evaluate("m => m.value") == pytest.approx(0.2)
    # a fresh page shows the same from the stream's snapshot
    page.reload()
    page.wait_for_selector("body[data-stream-ready='1']")
    assert seat.locator(".fatigue meter").evaluate("m => m.value") == pytest.approx(0.2)


def test_the_fatigue_meter_says_its_figure_beside_it(
        logged_in_page: Any, site: Any, peer: Any) -> None:
    """The seat's fatigue was a bar alone, with no figure where the speech bars beside it say
    "49 %": an index of 0 (every demo seat once it has one) drew an empty bar that reads as no
    data. Its figure on the box's 0 to 100 scale now stands beside it."""
    page = logged_in_page
    box = Box(site, peer, "box-a")
    box.status()
    box.metrics("agent", fatigue_phonation_min=12.0, fatigue_index=0.0, break_suggested=False)
    seat = _seat(page, "box-a", "agent")
    assert seat.locator(".fatigue .pct-fatigue").all_inner_texts() == ["0 / 100"]
    box.metrics("prospect", fatigue_phonation_min=12.5, fatigue_index=63.4,
                break_suggested=False)
    _seat(page, "box-a", "prospect")
    assert seat.locator(".fatigue .pct-fatigue").all_inner_texts() == ["63 / 100"]


def _stale(seat: Any) -> bool:
    return bool(seat.evaluate("e => e.classList.contains('stale')"))


def test_seat_freshness_is_judged_by_when_the_dashboard_heard_the_box_not_by_its_clock(
        browser_page: Any, dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
    """A box whose clock is off (its status reports clock_offset_ms because it can be) is fresh
    while it publishes and stale once silent for STALE_S, by the dashboard's clock."""
    page = browser_page
    page.clock.install()  # the page's timers, fast-forwarded below instead of waited for
    # box-b's clock runs 10 min ahead; the dashboard last heard it 30 s ago
    ahead_ts, heard_ts = time.time() + 600, time.time() - 30
    db = store.open_db(dashboard_server.settings.db_path)
    try:
        store.apply_status(db, wire.status_message(site.site, "box-b", "online", ahead_ts),
                           heard_ts)
        store.insert_metrics(db, wire.validate("metrics", {
            "v": wire.SCHEMA_VERSION, "site": site.site, "box": "box-b", "ts": ahead_ts,
            "seq": 1, "talk_state": "silence"}), heard_ts)
    finally:
        db.conn.close()
    browser_login(page, dashboard_server.url)
    assert _stale(_seat(page, "box-b"))
    # box-a's clock runs 10 min behind, and it publishes now
    behind = Box(site, peer, "box-a", clock_offset_s=-600)
    behind.status()
    behind.metrics("agent")
    seat = _seat(page, "box-a", "agent")
    assert not _stale(seat)
    assert "min" not in seat.locator(".updated").inner_text()  # not "(10 min)" old
    # its cue shows for CUE_SHOW_S from when it arrived, not from 10 min ago
    behind.event("cue_on", cue="too_fast", severity="medium", evidence_value=1.4,
                 evidence_threshold=1.3, evidence_unit="ratio")
    seat.locator(".cue-badge[data-cue='too_fast']").wait_for(timeout=LIVE_WAIT_MS)
    ahead = Box(site, peer, "box-b", clock_offset_s=600)
    ahead.seq = 1  # the seeded metrics
    ahead.metrics("prospect")
    _seat(page, "box-b", "prospect")
    assert not _stale(_seat(page, "box-b"))
    # both fall silent
    page.clock.fast_forward((STALE_S + 2) * 1000)
    for b in ("box-a", "box-b"):
        page.locator(f".seat.stale[data-box='{b}']").wait_for(timeout=LIVE_WAIT_MS)


def test_a_seat_whose_headset_is_unplugged_says_so_and_is_not_in_call(
        logged_in_page: Any, site: Any, peer: Any) -> None:
    """The box's status says capture_ok false once the headset is gone (and no audio, so no
    metrics, follows): the seat says so instead of its last talk state, and is not in call."""
    page = logged_in_page
    box = Box(site, peer, "box-a")
    box.status(capture_ok=True)
    box.event("speech_start")
    box.metrics("agent", in_call=True)
    seat = _seat(page, "box-a", "agent")
    _wait_in_call(page, 1)  # the speech_start alone shows "agent": the metrics may follow
    # unplugged mid-sentence: the call ends (call_end), then only status, capture_ok false
    box.event("call_end", channel="far")
    box.status(capture_ok=False, capture_error="device unplugged")
    _seat(page, "box-a", "no_capture")
    assert seat.locator(".talk-state").inner_text() == "Pas de casque / capture perdue"
    assert _in_call(page) == "0"
    # a fresh page knows it from the stream's snapshot
    page.reload()
    page.wait_for_selector("body[data-stream-ready='1']")
    assert seat.get_attribute("data-state") == "no_capture"
    assert _in_call(page) == "0"
    # plugged back: no talk state until the box measures one
    box.status(capture_ok=True)
    _seat(page, "box-a", "unknown")
    box.metrics("silence", in_call=False)
    _seat(page, "box-a", "silence")
    assert i18n.translate("en", "state.no_capture") == "No headset / capture lost"


def _wait_in_call(page: Any, count: int) -> None:
    # a locator, not wait_for_function: the page's CSP forbids evaluating a string
    page.locator("#count-in-call").filter(has_text=re.compile(rf"^{count}$")).wait_for(
        timeout=LIVE_WAIT_MS)


def test_in_call_counter_counts_seats_in_a_call_not_seats_talking(
        browser_page: Any, dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
    """'In call' is the box's word (in_call in its metrics, call_start and call_end events), for
    the boxes heard from: a pause in a call counts, an agent talking with no call does not."""
    page = browser_page
    page.clock.install()
    browser_login(page, dashboard_server.url)
    a, b = Box(site, peer, "box-a"), Box(site, peer, "box-b")
    a.status()
    b.status()
    a.metrics("silence", in_call=True)  # a pause in a call
    _seat(page, "box-a", "silence")
    assert _in_call(page) == "1"
    b.metrics("agent", in_call=False)  # talking to a neighbour, no call
    _seat(page, "box-b", "agent")
    assert _in_call(page) == "1"
    page.reload()  # the same from the stream's snapshot
    page.wait_for_selector("body[data-stream-ready='1']")
    assert _in_call(page) == "1"
    # the calls' events count at once, before the next metrics
    a.event("call_end", channel="far")
    _wait_in_call(page, 0)
    b.event("call_start", channel="far")
    _wait_in_call(page, 1)
    b.status("offline")
    _wait_in_call(page, 0)
    a.metrics("prospect", in_call=True)
    _wait_in_call(page, 1)
    page.clock.fast_forward((STALE_S + 2) * 1000)  # box-a silent since: not known in a call
    _wait_in_call(page, 0)


def test_the_box_status_decides_whether_a_seat_is_private(
        browser_page: Any, dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
    """Private mode is the box's (its button, its control socket, the dashboard's switch all end
    there): its status's private field decides, both ways, live and on a fresh page."""
    db = store.open_db(dashboard_server.settings.db_path)
    try:
        schema.import_inventory(db, [
            {"box": "box-a", "seat": "A", "agent": "agent-a", "agent_name": "Agent A"},
            {"box": "box-b", "seat": "B", "agent": "agent-b", "agent_name": "Agent B"}],
            site=site.site)
        with db.conn:  # the dashboard's switch put agent-a in private mode, some time ago
            db.conn.execute("UPDATE agents SET private = 1 WHERE agent = 'agent-a'")
    finally:
        db.conn.close()
    a, b = Box(site, peer, "box-a"), Box(site, peer, "box-b")
    b.status(private=True)  # box-b's agent pressed the box's private button

    def box_b_private() -> bool:
        db = store.open_db(dashboard_server.settings.db_path)
        try:
            row = db.conn.execute("SELECT private FROM boxes WHERE box = 'box-b'").fetchone()
            return row is not None and row[0] == 1
        finally:
            db.conn.close()

    wait_until(box_b_private, "box-b's private status stored")
    page = browser_page
    browser_login(page, dashboard_server.url)
    _seat(page, "box-b", "private")  # from the stream's snapshot
    # agent-a's box left private mode by itself (its button): its status says so
    a.status(private=False)
    a.metrics("agent")
    _seat(page, "box-a", "agent")
    page.check("#pseudo")  # the seat list again: its old private flag does not come back
    page.wait_for_selector("body[data-pseudo='1']")
    page.wait_for_timeout(200)
    assert _seat(page, "box-a").get_attribute("data-state") == "agent"
    b.status(private=False)
    b.metrics("prospect")
    _seat(page, "box-b", "prospect")
    a.status(private=True)
    _seat(page, "box-a", "private")


def _two_boxes_talking(page: Any, url: str, site: Any, peer: Any) -> tuple[Box, Box]:
    """Log in to the floor; box-a online with the agent talking, box-b with the prospect."""
    browser_login(page, url)
    a, b = Box(site, peer, "box-a"), Box(site, peer, "box-b")
    a.status()
    b.status()
    a.metrics("agent")
    b.metrics("prospect")
    return a, b


def _online_count(page: Any, count: int) -> None:
    page.locator("#count-online").filter(has_text=re.compile(rf"^{count}$")).wait_for(
        timeout=LIVE_WAIT_MS)


def test_a_box_the_it_page_calls_silent_is_offline_on_the_floor_live_and_on_a_fresh_page(
        browser_page: Any, dashboard_server: DashboardServer, site: Any, peer: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A box whose status still says online (a revoked box's Last Will is refused by the broker;
    its retained status comes back when the dashboard restarts) but that sent nothing for
    fleet.SILENT_AFTER_S is offline on the IT page: the floor said "En ligne" and counted it
    online, with only its age in red. It now says offline, by the IT page's own threshold (made
    short here, 4 s instead of 30 s, so that the test waits for it in real time)."""
    silent_s = 4.0
    monkeypatch.setattr(fleet, "SILENT_AFTER_S", silent_s)
    page = browser_page
    a, b = _two_boxes_talking(page, dashboard_server.url, site, peer)
    _seat(page, "box-a", "agent")
    _seat(page, "box-b", "prospect")
    _online_count(page, 2)
    # box-b falls silent, its status still "online"; box-a goes on publishing
    db = store.open_db(dashboard_server.settings.db_path)
    try:
        heard = db["boxes"].get("box-b")["last_seen_ts"]
        while time.time() < heard + silent_s - 1.5:
            a.metrics("agent")
            time.sleep(0.5)
        assert _seat(page, "box-b").get_attribute("data-state") == "prospect"  # not silent yet
        assert not [x for x in fleet.fleet(db)["boxes"] if x["offline"]]
        _online_count(page, 2)
        while time.time() < heard + silent_s + 1.0:
            a.metrics("agent")
            time.sleep(0.5)
        # the IT page calls box-b offline now; box-a is online
        assert {x["box"]: x["offline"] for x in fleet.fleet(db)["boxes"]} == {
            "box-a": False, "box-b": True}
        seat = _seat(page, "box-b", "offline")
        assert seat.locator(".online").inner_text() == "Hors ligne"
        assert seat.locator(".talk-state").inner_text() == "Hors ligne"
        _online_count(page, 1)
        assert _seat(page, "box-a").get_attribute("data-state") == "agent"
    finally:
        db.conn.close()
    fresh = page.context.new_page()  # a fresh page (same session), box-b still silent
    fresh.goto(dashboard_server.url + "/")
    fresh.wait_for_selector("body[data-stream-ready='1']")
    assert _seat(fresh, "box-b").get_attribute("data-state") == "offline"
    assert fresh.locator(".seat[data-box='box-b'] .online").inner_text() == "Hors ligne"
    assert fresh.locator("#count-online").inner_text() in ("0", "1")  # box-a, if heard lately
    # box-b is heard again: online at once
    a.metrics("silence")
    b.metrics("agent")
    _seat(fresh, "box-b", "agent")
    _online_count(fresh, 2)


def test_a_retired_box_leaves_an_open_floor_and_a_fresh_one(
        browser_page: Any, dashboard_server: DashboardServer, site: Any, peer: Any) -> None:
    """`miroir dashboard retire box-b` (a revoked box): the floor open at the time takes its seat
    away within the stream's scope refresh, and a fresh page never shows it."""
    from dashboard.routes.stream import SCOPE_REFRESH_S

    db = store.open_db(dashboard_server.settings.db_path)
    try:
        schema.import_inventory(db, [{"box": "box-a", "seat": "A"}, {"box": "box-b", "seat": "B"}],
                                site=site.site)
    finally:
        db.conn.close()
    page = browser_page
    a, _ = _two_boxes_talking(page, dashboard_server.url, site, peer)
    _seat(page, "box-b", "prospect")
    _online_count(page, 2)
    db = store.open_db(dashboard_server.settings.db_path)
    try:
        assert schema.retire_box(db, "box-b", "it-tech")["retired"]
    finally:
        db.conn.close()
    deadline = time.monotonic() + SCOPE_REFRESH_S + 5
    while page.locator(".seat[data-box='box-b']").count():
        assert time.monotonic() < deadline, "the retired box's seat stayed on the open floor"
        a.metrics("agent")  # the floor is live: the stream re-checks its scope as it goes
        page.wait_for_timeout(500)
    assert page.locator("#count-total").inner_text() == "1"
    _online_count(page, 1)
    page.reload()
    page.wait_for_selector("body[data-stream-ready='1']")
    assert page.locator(".seat").count() == 1 and _seat(page, "box-a").count() == 1
    assert page.locator("#count-total").inner_text() == "1"


def _restarting(page: Any, box: str) -> None:
    """Wait until ``box``'s seat shows a planned restart, in words and in its online badge."""
    seat = _seat(page, box, "restarting")
    assert seat.locator(".talk-state").inner_text() == "Redémarrage"
    assert seat.locator(".online").inner_text() == "Redémarrage"
    assert seat.get_attribute("data-online") == "restarting"


def _offline(page: Any, box: str) -> None:
    """Wait until ``box``'s seat shows offline, in words and in its online badge."""
    seat = _seat(page, box, "offline")
    assert seat.locator(".talk-state").inner_text() == "Hors ligne"
    assert seat.locator(".online").inner_text() == "Hors ligne"


def test_a_planned_restart_shows_the_seat_restarting_for_the_it_pages_grace_then_offline(
        browser_page: Any, restart_server: DashboardServer, site: Any, broker: Any,
        peer: Any) -> None:
    """A box stopped by `miroir edge update` (or a settings reload) says so in its offline status
    (``restart``): the IT page shows it "Redémarrage" and raises no alert for the dashboard's
    grace (MIROIR_DASH_RESTART_GRACE_S, 45 s here), but the floor said "Hors ligne" at once, as
    for a box gone for good. It now shows the seat restarting for that grace, live and on a fresh
    page, then offline if the box is not back; back, its state at once. A stop for good and a
    Last Will are offline at once, as before."""
    from tests._fixtures_broker import Peer
    from tests._fixtures_dashboard import RESTART_GRACE_S

    settings = restart_server.settings
    db = store.open_db(settings.db_path)
    try:  # box-d stopped for an update longer ago than the grace, box-e within it
        for box, ago_s in (("box-d", RESTART_GRACE_S + 5), ("box-e", RESTART_GRACE_S - 15)):
            store.apply_status(db, wire.status_message(site.site, box, "offline",
                                                       time.time() - ago_s, restart="update"),
                               time.time() - ago_s)
    finally:
        db.conn.close()
    page = browser_page
    page.clock.install()  # the grace fast-forwarded below instead of waited for
    browser_login(page, restart_server.url)
    _offline(page, "box-d")  # from the stream's snapshot: its grace is over
    _restarting(page, "box-e")
    a, b = Box(site, peer, "box-a"), Box(site, peer, "box-b")  # an update, a stop for good
    site.add_box("box-c")  # its connection drops: the broker publishes its Last Will
    c_topic = wire.topic(site.site, "box-c", "status")
    c = Peer(site.box("box-c"), site.ca_cert, "box-c", broker.port)
    c.client.will_set(c_topic, wire.encode("status", wire.status_message(
        site.site, "box-c", "offline", time.time())), qos=1, retain=True)
    assert not c.connect().is_failure
    c.publish(c_topic, wire.encode("status", wire.status_message(
        site.site, "box-c", "online", time.time())), retain=True)
    for box in (a, b):
        box.status()
        box.metrics("agent")
    _seat(page, "box-a", "agent")
    _seat(page, "box-b", "agent")
    _seat(page, "box-c", "unknown")
    _online_count(page, 3)

    a.status("offline", restart="update")  # the agent's clean stop before an update's restart
    b.status("offline")  # `systemctl stop`: no restart said
    c.client.loop_stop()
    c.client.socket().shutdown(socket.SHUT_RDWR)
    c.client.socket().close()
    _restarting(page, "box-a")
    _offline(page, "box-b")
    _offline(page, "box-c")
    _online_count(page, 0)
    assert page.locator(".legend .chip.st-restarting").inner_text() == "Redémarrage"
    db = store.open_db(settings.db_path)
    try:  # the IT page's own word on each, by the same setting
        view = fleet.fleet(db, restart_grace_s=settings.restart_grace_s)["boxes"]
        assert {x["box"]: (x["restarting"], x["offline"]) for x in view} == {
            "box-a": (True, False), "box-b": (False, True), "box-c": (False, True),
            "box-d": (False, True), "box-e": (True, False)}
    finally:
        db.conn.close()
    fresh = page.context.new_page()  # a fresh page (same session) knows it from the snapshot
    fresh.goto(restart_server.url + "/")
    fresh.wait_for_selector("body[data-stream-ready='1']")
    _restarting(fresh, "box-a")
    _offline(fresh, "box-b")
    _offline(fresh, "box-c")
    fresh.close()

    a.status()  # back: its state at once
    a.metrics("prospect")
    assert _seat(page, "box-a", "prospect").locator(".online").inner_text() == "En ligne"
    _online_count(page, 1)
    a.status("offline", restart="reload")  # good settings: the agent ends for systemd to restart
    _restarting(page, "box-a")
    _online_count(page, 0)
    page.clock.fast_forward(int((RESTART_GRACE_S - 20) * 1000))  # silent past SILENT_AFTER_S
    _restarting(page, "box-a")  # still within its grace
    page.clock.fast_forward(25_000)  # past the grace, not back: offline
    _offline(page, "box-a")
    _offline(page, "box-e")

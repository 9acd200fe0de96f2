"""A dashboard restart on a real Mosquitto (the site's TLS and ACL): the broker delivers every
box's retained status again to the new ingest, flagged retained. A copy of what is stored is not
news (last seen, alerts and the live push unchanged); one that differs is stored, its box last seen
when the message says (its ``ts``, bounded by now), never at the dashboard's restart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from dashboard import db as store
from dashboard import fleet, schema
from dashboard.ingest import Ingest
from dashboard.settings import DashboardSettings
from miroir import wire
from tests._fixtures_broker import wait_until
from tests._fixtures_dashboard import make_settings

GRACE_S = 3.0


def _dashboard(site: Any, broker: Any,
               tmp_path: Path) -> tuple[DashboardSettings, sqlite_utils.Database]:
    """The dashboard's settings on the site's broker and its database, schema applied."""
    settings = make_settings(tmp_path, site=site.site, mqtt_host="localhost",
                             mqtt_port=broker.port, mqtt_ca=site.ca_cert,
                             mqtt_cert=site.dashboard.cert, mqtt_key=site.dashboard.key,
                             restart_grace_s=GRACE_S)
    db = store.open_db(settings.db_path)
    schema.ensure_schema(db)
    return settings, db


def _publish_status(peer: Any, site: Any, state: str, ts: float, box: str = "box-a",
                    **extra: Any) -> None:
    """A box's retained status, as its publisher sends it."""
    peer.publish(wire.topic(site.site, box, "status"), wire.encode(
        "status", wire.status_message(site.site, box, state, ts, **extra)), retain=True)


def _start(settings: DashboardSettings, pushed: list[dict[str, Any]]) -> Ingest:
    """A dashboard's ingest, started and subscribed (the dashboard's start)."""
    ing = Ingest(settings, notify=pushed.append)
    ing.start()
    assert ing.wait_connected(10)
    return ing


def test_a_dashboard_restart_does_not_make_a_retained_status_news(
        site: Any, broker: Any, peer: Any, tmp_path: Path) -> None:
    settings, db = _dashboard(site, broker, tmp_path)
    pushed: list[dict[str, Any]] = []
    ing = _start(settings, pushed)
    try:
        box = peer(site.box("box-a"), "box-a")
        _publish_status(box, site, "offline", time.time(), restart="update")
        wait_until(lambda: db["boxes"].count == 1 and db["boxes"].get("box-a")["state"] ==
                   "offline", "the stop stored")
        seen_ts = db["boxes"].get("box-a")["last_seen_ts"]
        assert len(pushed) == 1
        # the box never came back: past the grace, its alert is raised, dated from its stop
        assert fleet.evaluate_alerts(db, seen_ts + GRACE_S + 1, GRACE_S) == (["box-a"], [])
        ing.close()
        ing = _start(settings, pushed)  # the dashboard restarted: the retained stop again
        wait_until(lambda: ing.stats()["received"] == 1, "the retained status handled")
        row = db["boxes"].get("box-a")
        assert row["last_seen_ts"] == seen_ts  # moved by 4.2 s to the restart before
        assert not fleet.is_restarting(row, seen_ts + GRACE_S + 2, GRACE_S)
        # the open alert is neither cleared nor raised again with a new since-time
        assert fleet.evaluate_alerts(db, seen_ts + GRACE_S + 2, GRACE_S) == ([], [])
        [alert] = fleet.active_alerts(db)
        assert alert["since_ts"] == seen_ts and alert["cleared_ts"] is None
        assert len(pushed) == 1  # nothing new to push to the pages
    finally:
        ing.close()
        db.conn.close()


def test_a_status_changed_while_the_dashboard_was_away_keeps_the_time_it_says(
        site: Any, broker: Any, peer: Any, tmp_path: Path) -> None:
    """A dashboard away past its broker session (or on a restored database): its boxes changed
    state meanwhile, their retained statuses are all it gets. A Last Will (its ``ts`` is when the
    box connected) keeps the time the dashboard last heard the box; a stop is dated by its ``ts``."""
    settings, db = _dashboard(site, broker, tmp_path)
    now = time.time()
    heard_ts = now - 2 * 86400.0  # the dashboard last heard box-a two days ago
    stop_ts = now - 60.0  # box-b stopped for an update a minute ago, never back
    for box, ts in (("box-a", heard_ts), ("box-b", stop_ts - 30.0)):
        store.apply_status(db, wire.status_message(site.site, box, "online", ts - 1), ts)
    _publish_status(peer(site.box("box-a"), "box-a"), site, "offline", now - 3 * 86400.0)
    _publish_status(peer(site.box("box-b"), "box-b"), site, "offline", stop_ts, restart="update",
                    box="box-b")
    pushed: list[dict[str, Any]] = []
    ing = _start(settings, pushed)
    try:
        wait_until(lambda: [r["state"] for r in db["boxes"].rows] == ["offline", "offline"],
                   "both statuses stored")
        start_ts = time.time()
        rows = {r["box"]: r for r in db["boxes"].rows}
        # the dashboard's start before: offline "since" now, restarting for the grace again
        assert rows["box-a"]["last_seen_ts"] == heard_ts
        assert rows["box-b"]["last_seen_ts"] == stop_ts
        assert fleet.restarting_until(rows["box-b"], GRACE_S) == stop_ts + GRACE_S
        assert fleet.evaluate_alerts(db, start_ts, GRACE_S) == (["box-a", "box-b"], [])
        view = {b["box"]: b for b in fleet.fleet(db, start_ts, GRACE_S)["boxes"]}
        assert view["box-a"]["since_ts"] == heard_ts and view["box-b"]["since_ts"] == stop_ts
        assert sorted((u["box"], u["ingested_ts"], u["restarting_until_ts"]) for u in pushed) == [
            ("box-a", heard_ts, None), ("box-b", stop_ts, stop_ts + GRACE_S)]
    finally:
        ing.close()
        db.conn.close()


def test_a_gap_the_box_status_told_of_is_still_known_after_a_dashboard_restart(
        site: Any, broker: Any, peer: Any, tmp_path: Path) -> None:
    """The retained status is not news, but it is all a restarted ingest learns of what the broker
    acknowledged to a quiet box: the hole below it is still asked for (and counted a gap)."""
    settings, db = _dashboard(site, broker, tmp_path)
    pushed: list[dict[str, Any]] = []
    ing = _start(settings, pushed)
    try:
        box = peer(site.box("box-a"), "box-a")
        _publish_status(box, site, "online", time.time(), seq_last=10, outbox_depth=0)
        wait_until(lambda: ing.stats()["received"] == 1, "the status handled")
        assert ing.gaps() == {"box-a": (1, 10)}  # acknowledged to the box, never stored here
        ing.close()
        ing = _start(settings, pushed)  # the dashboard restarted: the retained status again
        wait_until(lambda: ing.stats()["received"] == 1, "the retained status handled")
        assert len(pushed) == 1  # still not news
        assert ing.gaps() == {"box-a": (1, 10)}  # forgotten before: {}
    finally:
        ing.close()
        db.conn.close()
    # one message at a time (the writer's fallback when a batch fails): the same
    topic = wire.topic(site.site, "box-a", "status")
    payload = wire.encode("status", wire.status_message(site.site, "box-a", "online", time.time(),
                                                        seq_last=20, outbox_depth=0))
    for retained, outcome in ((False, "status"), (True, "unchanged")):
        alone = Ingest(settings)
        try:
            assert alone.handle(topic, payload, retained=retained) == outcome
            assert alone.gaps() == {"box-a": (1, 20)}
        finally:
            alone.close()


def test_a_status_held_by_the_broker_while_the_dashboard_was_away_is_dated_when_sent(
        site: Any, broker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard away for less than its broker session: the statuses its box sent meanwhile
    waited in the session's queue and, delivered live (not retained), were dated at the
    dashboard's return, the box "seen" then although it had said nothing since (a stale state
    shown fresh). The box's online status now carries a Message Expiry Interval: the broker drops
    one older than that, and says how long a delivered one waited, which the dashboard takes off
    its reception (counted late, logged). Real Mosquitto, the box's real publisher."""
    from edge.publisher import Publisher
    from edge.settings import EdgeSettings

    expiry_s, away_s = 4, 2.5
    monkeypatch.setattr(wire, "STATUS_EXPIRY_S", expiry_s, raising=False)
    settings, db = _dashboard(site, broker, tmp_path)
    pair = site.box("box-a")
    pub = Publisher(EdgeSettings(site=site.site, box="box-a", broker_host="localhost",
                                 broker_port=broker.port, ca_file=site.ca_cert,
                                 cert_file=pair.cert, key_file=pair.key, state_dir=tmp_path))
    pushed: list[dict[str, Any]] = []
    ing = _start(settings, pushed)
    try:
        pub.start()
        wait_until(pub.connected.is_set, "the box connected")
        pub.publish_status("online", outbox_depth=0).wait_for_publish(5.0)
        wait_until(lambda: len(pushed) == 1, "the live status stored")
        ing.stop()  # the dashboard away: its session (and queue) kept by the broker
        pub.publish_status("online", outbox_depth=1).wait_for_publish(5.0)
        time.sleep(expiry_s + 0.5)  # the absence: the first status outlives its expiry
        sent_ts = time.time()
        pub.publish_status("online", outbox_depth=2).wait_for_publish(5.0)
        time.sleep(away_s)  # the rest of the absence
        back_ts = time.time()
        ing.start()
        assert ing.wait_connected(10)
        wait_until(lambda: pushed[-1]["outbox_depth"] == 2, "the held status stored and pushed")
        row = db["boxes"].get("box-a")
        assert sent_ts - 1.0 <= row["last_seen_ts"] <= sent_ts + 1.0  # was back_ts and later
        assert row["last_seen_ts"] < back_ts - 1.0
        assert [u["outbox_depth"] for u in pushed] == [0, 2]  # the expired one never came
        assert sent_ts - 1.0 <= pushed[-1]["ingested_ts"] <= sent_ts + 1.0
        assert ing.stats()["late_statuses"] == 1  # the first, delivered at once, was not late
    finally:
        pub.stop()
        ing.close()
        db.conn.close()


def test_late_statuses_after_a_restart_are_a_few_log_lines_then_their_number(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A dashboard back after an absence gets every box's held status at once: each wrote its own
    log line (200 boxes, 200 lines). They are written as refused commands are (miroir/journal.py):
    the first few one by one, then their number, here when the ingest stops."""
    import logging

    from miroir.journal import REFUSALS_LOGGED
    settings = make_settings(tmp_path, site="site-1")
    ing = Ingest(settings, notify=lambda _update: None)
    boxes = [f"box-{i:03d}" for i in range(200)]
    now = time.time()
    items = [(wire.topic("site-1", box, "status"),
              wire.encode("status", wire.status_message("site-1", box, "online", now - 30.0)))
             for box in boxes]
    caplog.set_level(logging.INFO, logger="dashboard.ingest")
    try:
        assert ing.handle_batch(items, late_s=dict.fromkeys(range(len(items)), 30.0)) == (
            ["status"] * len(items))
        assert ing.stats()["late_statuses"] == len(boxes)
    finally:
        ing.close()
    lines = [r.getMessage() for r in caplog.records
             if r.name == "dashboard.ingest" and "late" in r.getMessage()]
    assert len(lines) <= REFUSALS_LOGGED + 2, f"{len(lines)} lines for {len(boxes)} late statuses"
    assert lines[0].startswith("late status delivered: box-000 waited 30 s"), lines[0]
    assert lines[-1].startswith(f"{len(boxes)} late statuses delivered in "), lines[-1]
    assert f"({len(boxes) - REFUSALS_LOGGED} not written one by one)" in lines[-1]

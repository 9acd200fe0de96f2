"""Planned restarts on the IT page and in the alerts: the real agent (the box's own Box class and
publisher) restarted by the real `miroir edge update` or by a settings reload, a real Mosquitto,
the dashboard's real ingest and alert evaluation on SQLite. A box that says it restarts is shown
"Redémarrage" for the grace period, not alerted; one that does not come back, or that stops for
good, is alerted as before."""

from __future__ import annotations

import html
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
from fastapi.testclient import TestClient

from dashboard import db as store
from dashboard import fleet, schema
from dashboard.app import create_app
from dashboard.ingest import Ingest
from dashboard.settings import DashboardSettings
from edge.health import RESTART_FILE
from tests._fixtures_broker import SITE_ID
from tests._fixtures_dashboard import client_login, make_settings
from tests._fixtures_transport import wait_for
from tests._fixtures_update import BOX, SYSTEMCTL, Box

TOKEN = "scrape-token-0123456789abcdef"
HELD_SYSTEMCTL = SYSTEMCTL.replace("setsid ", "while [ -f {work}/hold ]; do sleep 0.1; done\nsetsid ")
"""The fake systemctl, whose start waits while ``hold`` exists: the test looks at the dashboard
between the old agent's stop and the new one's start, however short the restart is."""


def _row(db: sqlite_utils.Database) -> dict[str, Any]:
    rows = list(db.query("SELECT * FROM boxes WHERE box = ?", [BOX]))
    return rows[0] if rows else {}


def _state(db: sqlite_utils.Database) -> str | None:
    return _row(db).get("state")


@pytest.fixture
def dash(box: Box, site: Any, tmp_path: Path) -> Iterator[tuple[DashboardSettings, sqlite_utils.Database]]:
    """The dashboard's ingest on the box's broker, and a connection to its database."""
    (tmp_path / "dash").mkdir()
    token_file = tmp_path / "dash" / "metrics-token"
    token_file.write_text(TOKEN)
    settings = make_settings(tmp_path / "dash", site=SITE_ID, mqtt_host="localhost",
                             mqtt_port=box.broker.port, mqtt_ca=site.ca_cert,
                             mqtt_cert=site.dashboard.cert, mqtt_key=site.dashboard.key,
                             metrics_token_file=token_file)
    db = store.open_db(settings.db_path)
    schema.ensure_schema(db)
    schema.import_inventory(db, [{"box": BOX, "seat": "A1"}], site=SITE_ID)
    ingest = Ingest(settings)
    ingest.start()
    try:
        assert ingest.wait_connected(10.0)
        wait_for(lambda: _state(db) == "online", 30, "the agent's online status")
        yield settings, db
    finally:
        ingest.close()
        db.conn.close()


def _app(settings: DashboardSettings) -> TestClient:
    return TestClient(create_app(settings, start_ingest=False), base_url="https://testserver",
                      follow_redirects=False)


def _it_page(settings: DashboardSettings) -> tuple[str, bool]:
    """The IT page's row of the box, and whether the page counts no alert, from the real app."""
    with _app(settings) as c:
        client_login(c)
        page = c.get("/it").text
    row = page[page.index('<tr class="fleet-box'):]
    return html.unescape(row[:row.index("</tr>")]), 'data-alerts="0"' in page


def _metrics(settings: DashboardSettings) -> dict[tuple[str, str | None], float]:
    """The /metrics samples, by name and box."""
    from prometheus_client.parser import text_string_to_metric_families

    with _app(settings) as c:
        scrape = c.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text
    return {(s.name, s.labels.get("box")): s.value
            for family in text_string_to_metric_families(scrape) for s in family.samples}


def _codes(db: sqlite_utils.Database, now: float | None = None) -> list[str]:
    """The box's connection problem on the IT page (its clock, the host's here, aside)."""
    [b] = fleet.fleet(db, now)["boxes"]
    return [p["code"] for p in b["problems"] if p["code"] in ("offline", "restarting")]


def test_an_update_shows_the_box_restarting_and_raises_no_alert(
        box: Box, dash: tuple[DashboardSettings, sqlite_utils.Database]) -> None:
    """Before: the agent's clean stop said "offline" and one evaluation during the restart
    raised an offline alert (a history row, miroir_alerts_raised_total + 1) for a planned update."""
    settings, db = dash
    (box.work / "bin" / "systemctl").write_text(HELD_SYSTEMCTL.format(work=box.work, root=box.root))
    (box.work / "hold").touch()
    update = box.start_update(box.release("1.1"))
    try:
        wait_for(lambda: _state(db) == "offline", 60, "the old agent's clean stop")
        stopped = _row(db)
        assert stopped["restart"] == "update"
        assert fleet.evaluate_alerts(db) == ([], [])
        assert _codes(db) == ["restarting"]
        [b] = fleet.fleet(db)["boxes"]
        assert not b["offline"] and b["restarting"] and b["since_ts"] == stopped["last_seen_ts"]
        assert not (box.state / RESTART_FILE).exists()  # taken by the agent that stopped
        row, no_alert = _it_page(settings)
        got = _metrics(settings)
        assert 'data-problem="restarting">Redémarrage <span class="detail">mise à jour</span>' in row
        assert "Hors ligne" not in row and no_alert
        assert (got[("miroir_boxes_restarting", None)], got[("miroir_boxes_offline", None)],
                got[("miroir_alerts_active", None)], got[("miroir_box_up", BOX)]) == (1, 0, 0, 0)
        (box.work / "hold").unlink()
        _, err = update.communicate(timeout=180)
    finally:
        update.kill()
    assert update.returncode == 0, err
    wait_for(lambda: _state(db) == "online", 30, "the new agent's online status")
    assert _row(db)["restart"] is None and _row(db)["version"] == "1.1"
    assert fleet.evaluate_alerts(db) == ([], [])
    assert fleet.alert_counts(db) == (0, 0)
    assert _codes(db) == []


def test_a_reload_restart_alerts_only_if_the_box_does_not_come_back_and_a_stop_alerts_at_once(
        box: Box, dash: tuple[DashboardSettings, sqlite_utils.Database]) -> None:
    """A good settings reload ends the agent (exit 75) for systemd to start it again: here
    nothing starts it, so it alerts once the grace period is over, dated from its stop. A stop
    (SIGTERM without the update's note: `systemctl stop`, a shutdown) alerts at once."""
    _, db = dash
    pid = int((box.work / "agent.pid").read_text())
    os.kill(pid, signal.SIGHUP)
    wait_for(lambda: _state(db) == "offline", 60, "the agent's stop after the reload")
    stopped = _row(db)
    assert stopped["restart"] == "reload"
    seen = float(stopped["last_seen_ts"])
    grace = fleet.RESTART_GRACE_S
    assert fleet.evaluate_alerts(db, now=seen + grace) == ([], [])
    assert _codes(db, seen + grace) == ["restarting"]
    assert fleet.evaluate_alerts(db, now=seen + grace + 1) == ([BOX], [])
    [alert] = fleet.active_alerts(db)
    assert (alert["reason"], alert["since_ts"]) == ("restart", seen)
    assert _codes(db, seen + grace + 1) == ["offline"]

    box.restart()  # started again: the alert clears
    wait_for(lambda: _state(db) == "online", 60, "the agent back")
    assert fleet.evaluate_alerts(db) == ([], [BOX])

    os.kill(int((box.work / "agent.pid").read_text()), signal.SIGTERM)
    wait_for(lambda: _state(db) == "offline", 60, "the agent's stop")
    assert _row(db)["restart"] is None
    assert fleet.evaluate_alerts(db) == ([BOX], [])
    assert [a["reason"] for a in fleet.alert_history(db)] == ["status", "restart"]


def test_a_stale_or_bad_restart_note_is_dropped_and_a_bad_reason_is_quarantined(
        tmp_path: Path) -> None:
    """A note the update left while no agent ran (older than the restart can take) must not make
    a later stop for good look planned; a reason outside the contract breaks it."""
    import json
    import time

    from edge.health import RESTART_NOTE_MAX_AGE_S, note_restart, take_restart_note
    from miroir import wire

    note_restart(tmp_path, "update")
    assert (tmp_path / RESTART_FILE).stat().st_mode & 0o777 == 0o644  # the agent's user reads it
    assert take_restart_note(tmp_path) == "update" and not (tmp_path / RESTART_FILE).exists()
    assert take_restart_note(tmp_path) is None
    note_restart(tmp_path, "update")
    assert take_restart_note(tmp_path, now=time.time() + RESTART_NOTE_MAX_AGE_S + 1) is None
    assert not (tmp_path / RESTART_FILE).exists()
    for bad in (json.dumps({"reason": "shutdown", "ts": time.time()}), "not json", '{"ts": 1}'):
        (tmp_path / RESTART_FILE).write_text(bad)
        assert take_restart_note(tmp_path) is None and not (tmp_path / RESTART_FILE).exists()
    with pytest.raises(wire.WireError, match="restart"):
        wire.decode("status", json.dumps(wire.status_message(SITE_ID, BOX, "online", time.time())
                                         | {"restart": "shutdown"}).encode())

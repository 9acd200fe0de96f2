"""A seat that changes hands, end to end: the inventory import (the real CLI) gives the box's seat to
another agent, the running dashboard tells the box through the real broker (its TLS and ACL), and
the box forgets the previous agent's baselines, also when it was offline at the change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from dashboard import db as store
from dashboard.app import create_app
from dashboard.ingest import RESEND_RETRY_S
from edge import baselines
from edge.box import Box
from edge.pipeline import load_vad_model
from edge.settings import EdgeSettings
from tests._fixtures_broker import SITE_ID, wait_until
from tests._fixtures_dashboard import make_settings

A_BASELINE = {"pace_syl_s": 6.32, "spectral_speed_db": 3.64, "pitch_range_st": 14.19, "level_dbfs": -19.65}
"""A baseline of the kind the box learns (tests/test_baselines.py learns one from an AMI headset)."""


def _import(settings, tmp_path: Path, agent: str) -> None:
    """``miroir dashboard import`` of one row: box-a's seat P1 to ``agent``."""
    inventory = tmp_path / f"inventory-{agent}.csv"
    inventory.write_text(f"box,seat,agent,team\nbox-a,P1,{agent},t1\n")
    env = dict(os.environ, MIROIR_DASH_SITE=SITE_ID, MIROIR_DASH_DB_PATH=str(settings.db_path))
    r = subprocess.run([sys.executable, "-m", "miroir", "dashboard", "import", str(inventory)],
                       env=env, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0 and r.stdout.strip() == "imported 1 seats", r.stderr


def _box(site, broker, state: Path) -> Box:
    cert = site.box("box-a")
    return Box(EdgeSettings(site=SITE_ID, box="box-a", broker_port=broker.port,
                            ca_file=site.ca_cert, cert_file=cert.cert, key_file=cert.key,
                            state_dir=state), load_vad_model(), version="test")


def _online(box: Box) -> None:
    box.publisher.start()
    wait_until(lambda: (box.pump(), box.publisher.connected.is_set())[1], "the box connected")


def test_a_seat_given_to_another_agent_while_its_box_is_off_reaches_the_box(site, broker,
                                                                            tmp_path) -> None:
    settings = make_settings(tmp_path, site=SITE_ID, mqtt_host="localhost", mqtt_port=broker.port,
                             mqtt_ca=site.ca_cert, mqtt_cert=site.dashboard.cert,
                             mqtt_key=site.dashboard.key)
    state = tmp_path / "state"
    _import(settings, tmp_path, "agent-a")
    state.mkdir()
    assert baselines.save(state, A_BASELINE, None)  # agent A's shift, after A got the seat
    with TestClient(create_app(settings), base_url="https://testserver") as client:
        ingest = client.app.state.ingest  # type: ignore[attr-defined]
        assert ingest.wait_connected(20)
        box = _box(site, broker, state)
        _online(box)
        db = store.open_db(settings.db_path)

        def reported() -> float | None:
            row = db.conn.execute("SELECT baselines_ts FROM boxes WHERE box = 'box-a'").fetchone()
            return None if row is None else row[0]

        wait_until(lambda: (box.pump(), reported() is not None)[1], "the box's status stored")
        time.sleep(1.0)  # a few checks of the seats: A's own baselines stay
        box.pump()
        assert ingest.forget_requests == 0 and (state / baselines.FILE).exists()
        box.run(iter(()), drain_s=0.0)  # the box stops for the night: offline
        wait_until(lambda: db.conn.execute(
            "SELECT state FROM boxes WHERE box = 'box-a'").fetchone()[0] == "offline", "offline")

        _import(settings, tmp_path, "agent-b")  # the seat goes to B while the box is off
        (changed_ts,) = db.conn.execute("SELECT changed_ts FROM seats WHERE box = 'box-a'").fetchone()
        time.sleep(1.0)
        assert ingest.forget_requests == 0, "nothing is sent to a box that is offline"
        box = _box(site, broker, state)  # the next morning, A's baselines loaded
        assert box.pipeline.learned_baselines()[0] == A_BASELINE  # type: ignore[attr-defined]
        _online(box)
        wait_until(lambda: (box.pump(), not (state / baselines.FILE).exists())[1],
                   "A's baselines deleted at the dashboard's word")
        box.step(np.zeros((2, 1600), dtype=np.float32))  # outside a call: learned afresh now
        assert box.pipeline.learned_baselines() == (None, None)  # type: ignore[attr-defined]
        assert box.cmd_refused == 0 and not box.relearn_pending
        wait_until(lambda: (box.pump(), (reported() or 0) >= changed_ts)[1],
                   "the box's status says its baselines follow the seat change")
        asked = ingest.forget_requests
        time.sleep(RESEND_RETRY_S + 1.0)  # the dashboard asks no more
        box.pump()
        assert ingest.forget_requests == asked >= 1
        box.run(iter(()), drain_s=0.0)
        audit = db.conn.execute("SELECT actor_role, agent, detail FROM audit_log "
                                "WHERE action = 'assign_seat' ORDER BY id").fetchall()
        db.conn.close()
    assert [(role, agent, json.loads(d)) for role, agent, d in audit] == [
        ("it", "agent-a", {"box": "box-a", "seat": "P1"}),
        ("it", "agent-b", {"box": "box-a", "seat": "P1"})]


def test_an_erased_agents_baselines_leave_the_box_at_their_seat(site, broker, tmp_path) -> None:
    """Erasing an agent who left frees their seat: the box there deletes their learned baselines
    (they stayed in baselines.json for up to 72 h before, docs/privacy.md)."""
    from dashboard import retention

    settings = make_settings(tmp_path, site=SITE_ID, mqtt_host="localhost", mqtt_port=broker.port,
                             mqtt_ca=site.ca_cert, mqtt_cert=site.dashboard.cert,
                             mqtt_key=site.dashboard.key)
    state = tmp_path / "state"
    state.mkdir()
    _import(settings, tmp_path, "agent-a")
    assert baselines.save(state, A_BASELINE, None)
    with TestClient(create_app(settings), base_url="https://testserver") as client:
        ingest = client.app.state.ingest  # type: ignore[attr-defined]
        assert ingest.wait_connected(20)
        box = _box(site, broker, state)
        _online(box)
        db = store.open_db(settings.db_path)
        retention.erase_agent(db, "agent-a")  # what POST /api/agents/agent-a/erase runs
        wait_until(lambda: (box.pump(), not (state / baselines.FILE).exists())[1],
                   "the erased agent's baselines deleted on the box")
        box.step(np.zeros((2, 1600), dtype=np.float32))
        assert box.pipeline.learned_baselines() == (None, None)  # type: ignore[attr-defined]
        box.run(iter(()), drain_s=0.0)
        db.conn.close()
    assert ingest.forget_requests >= 1 and box.cmd_refused == 0

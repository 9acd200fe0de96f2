"""Private mode at the box: the agent's switch, sent on the real broker, stops everything about the
call within 1 s; only the fact that the seat is private leaves the box."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from edge.box import Box
from edge.pipeline import load_vad_model
from edge.settings import EdgeSettings
from edge.source import read_wav
from miroir import wire
from tests._fixtures_broker import SITE_ID, wait_until

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BLOCK = 1024
RATE_HZ = 16_000


def test_no_metric_of_a_private_stretch_leaves_the_box(site, broker, peer, tmp_path) -> None:
    near = read_wav(SHARED / "ami-headsets" / "source0.wav", notice=False).samples
    far = read_wav(SHARED / "ami-headsets" / "source1.wav", notice=False).samples
    audio = np.stack([near, far])[:, : 40 * RATE_HZ]
    dash = peer(site.dashboard, "dashboard")
    for f in wire.site_filters(SITE_ID):
        dash.subscribe(f)
    cert = site.box("box-a")
    box = Box(EdgeSettings(site=SITE_ID, box="box-a", broker_port=broker.port,
                           ca_file=site.ca_cert, cert_file=cert.cert, key_file=cert.key,
                           state_dir=tmp_path / "state"), load_vad_model(), version="test")
    box.publisher.start()
    wait_until(box.publisher.connected.is_set, "the box connected")
    cmd_topic = wire.topic(SITE_ID, "box-a", "cmd")

    def command(action: str) -> None:
        msg = wire.cmd_message(SITE_ID, "box-a", action, time.time())
        dash.publish(cmd_topic, wire.encode(wire.CMD_KIND, msg))

    private_from_s = private_to_s = None
    for i in range(0, audio.shape[1], BLOCK):
        t_s = i / RATE_HZ
        if private_from_s is None and t_s >= 15.0:
            command("private_on")
            wait_until(lambda: (box.pump(), box.private)[1], "private mode on at the box")
            private_from_s = t_s
        if private_to_s is None and t_s >= 25.0:
            command("private_off")
            wait_until(lambda: (box.pump(), not box.private)[1], "private mode off at the box")
            private_to_s = t_s
        box.step(audio[:, i:i + BLOCK])
    wait_until(lambda: (box.pump(), box.outbox.depth() == 0)[1], "the outbox drained")
    box.publisher.stop(box.status_fields())
    box.outbox.close()
    assert private_from_s is not None and private_to_s is not None

    got = [(t.rsplit("/", 1)[1], json.loads(p)) for t, p in dash.messages]
    metrics = [m for kind, m in got if kind == "metrics"]
    events = [m for kind, m in got if kind == "event"]
    # Before and after the private stretch the box reports; inside it, nothing about the call.
    assert any(m["t_start"] < private_from_s for m in metrics)
    assert any(m["t_start"] > private_to_s for m in metrics)
    # (a window that straddles a switch holds only the audio on its public side)
    inside = [m for m in metrics
              if m["t_start"] >= private_from_s + 1.0
              and m["t_start"] + m["window_s"] <= private_to_s]
    assert not inside, f"metrics of the private stretch left the box: {inside[:2]}"
    timed = [e for e in events if "t_audio_s" in e and e["name"] not in ("private_on", "private_off")
             and private_from_s + 1.0 < e["t_audio_s"] < private_to_s]
    assert not timed, f"events of the private stretch left the box: {timed[:2]}"
    names = [e["name"] for e in events]
    assert "private_on" in names and "private_off" in names
    statuses = [m for kind, m in got if kind == "status"]
    assert any(s.get("private") is True for s in statuses)
    assert statuses[-1]["private"] is False

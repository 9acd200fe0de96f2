"""Plausible values on the wire: every number has a range, the box's honest output keeps to it,
and a box sending absurd (finite) values is refused at the dashboard."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.farend import build_call_timeline
from dashboard import analytics, schema
from dashboard import db as store
from dashboard.ingest import Ingest
from edge.affect import AffectConfig, AffectModel, AffectStage
from edge.campaign import AffectDisclosure, CampaignConfig, FatigueConfig
from edge.pipeline import Pipeline, load_vad_model
from miroir import wire
from tests._fixtures_broker import wait_until
from tests._fixtures_dashboard import make_settings
from tests._fixtures_fatigue import noise_floor, read_wav, sox
from tests._fixtures_signals import SHARED


def _metrics(site: str, box: str, seq: int, **extra: Any) -> bytes:
    msg = {"v": wire.SCHEMA_VERSION, "site": site, "box": box, "ts": time.time(), "seq": seq,
           "t_start": float(seq), "window_s": 1.0, "near_speech_ratio": 0.6,
           "far_speech_ratio": 0.1, "near_talking": True, "far_talking": False,
           "talk_state": "agent", **extra}
    return json.dumps(msg).encode()


def test_absurd_values_from_a_box_are_quarantined_and_leave_the_team_means_alone(
        site: Any, broker: Any, peer: Any, tmp_path: Path) -> None:
    """A box (a stolen certificate, a firmware bug) sent finite but absurd numbers the contract
    took, as it checked types only: two metrics with near_level_dbfs = 1e300 made the team's mean
    1e+300, and a status with seq_first = 2**62 took the site's lost count to 4.6e18. Now each
    is quarantined and counted, nothing of it is stored, and the means and counts are the honest
    messages' own."""
    settings = make_settings(
        tmp_path, site=site.site, mqtt_host="localhost", mqtt_port=broker.port,
        mqtt_ca=site.ca_cert, mqtt_cert=site.dashboard.cert, mqtt_key=site.dashboard.key)
    db = store.open_db(settings.db_path)
    schema.ensure_schema(db)
    schema.import_inventory(db, [
        {"box": "box-a", "seat": "A1", "agent": "agent-a", "team": "team-a"},
        {"box": "box-b", "seat": "A2", "agent": "agent-b", "team": "team-a"}],
        site=site.site, now=time.time() - 60)
    ing = Ingest(settings)
    ing.start()
    try:
        assert ing.wait_connected(10.0)
        honest, hostile = peer(site.box("box-a"), "box-a"), peer(site.box("box-b"), "box-b")
        t_a, t_b = (wire.topic(site.site, b, "metrics") for b in ("box-a", "box-b"))
        honest.publish(t_a, _metrics(site.site, "box-a", 1, near_level_dbfs=-20.0))
        honest.publish(t_a, _metrics(site.site, "box-a", 2, near_level_dbfs=-30.0))
        hostile.publish(t_b, _metrics(site.site, "box-b", 1, near_level_dbfs=1e300))
        hostile.publish(t_b, _metrics(site.site, "box-b", 2, near_level_dbfs=1e308))
        hostile.publish(t_b, _metrics(site.site, "box-b", 3, near_f0_median_hz=-5.0))
        hostile.publish(t_b, _metrics(site.site, "box-b", 4, turns_agent_60s=10**9))
        status = {"v": wire.SCHEMA_VERSION, "site": site.site, "box": "box-b", "ts": time.time(),
                  "state": "online", "seq_last": 4, "seq_first": 2**62, "outbox_depth": 0}
        hostile.publish(wire.topic(site.site, "box-b", "status"), json.dumps(status).encode())
        wait_until(lambda: ing.stats()["received"] >= 7, "7 messages ingested")
        st = ing.stats()
        assert (st["inserted"], st["quarantined"], st["lost"]) == (2, 5, 0), st
    finally:
        ing.close()
    db = store.open_db(settings.db_path)
    assert [(m["box"], m["seq"]) for m in db["metrics"].rows] == [("box-a", 1), ("box-a", 2)]
    reasons = [q["reason"] for q in db["quarantine"].rows]
    assert any("near_level_dbfs: 1e+300 outside" in r for r in reasons), reasons
    assert any("seq_first" in r for r in reasons), reasons
    mean, agents = analytics.team_means(db, "team-a")["near_level_dbfs"]
    assert (mean, agents) == (-25.0, 1)
    assert db.conn.execute("SELECT coalesce(sum(seq_lost), 0) FROM boxes").fetchone()[0] == 0


# ------------------------------------------------ the box's honest output keeps to the ranges
RATE_HZ = 16_000


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` cut or looped to ``n`` samples."""
    return (x[:n] if len(x) >= n else np.resize(x, n)).astype(np.float32)


def _pair(near: np.ndarray, far: np.ndarray) -> np.ndarray:
    n = max(len(near), len(far))
    return np.stack([_fit(np.pad(near, (0, n - len(near))), n), _fit(np.pad(far, (0, n - len(far))), n)])


def _emodb_call(every: int) -> np.ndarray:
    """Every ``every``-th EmoDB clip (all speakers and emotions), taking turns on the two sides,
    with gaps, an overlap every seventh turn and a quiet real noise floor."""
    paths = sorted((SHARED / "emodb" / "wav").glob("*.wav"))[::every]
    rng = np.random.default_rng(0)
    near: list[np.ndarray] = []
    far: list[np.ndarray] = []
    for i, path in enumerate(paths):
        x = read_wav(path)
        gap = np.zeros(int(RATE_HZ * rng.uniform(0.2, 1.5)), np.float32)
        talk, listen = (near, far) if i % 2 else (far, near)
        talk += [x, gap]
        listen += [x if i % 7 == 0 else np.zeros_like(x), gap]
    n, f = np.concatenate(near), np.concatenate(far)
    return np.stack([n + noise_floor(len(n), seed=1), f + noise_floor(len(f), seed=2)])


def _recordings() -> Iterator[tuple[str, np.ndarray]]:
    """Every kind of audio the tests feed the box: speech (read, meetings, far-field, English
    clips with fillers, whispers, laughter), noise, tones and music on the line, and bad input."""
    headsets = [read_wav(SHARED / "ami-headsets" / f"source{i}.wav") for i in range(4)]
    speech, line = headsets[0][:30 * RATE_HZ], headsets[1][:30 * RATE_HZ]
    noises = np.concatenate([read_wav(p)[:8 * RATE_HZ] for p in sorted((SHARED / "noise").glob("*.wav"))])
    mfa = np.concatenate([np.concatenate([read_wav(p)[:3 * RATE_HZ], np.zeros(RATE_HZ // 2, np.float32)])
                          for p in sorted((SHARED / "mfa").glob("*.wav"))])
    yield "emodb", _emodb_call(every=4)
    yield "ami headsets", _pair(headsets[2], headsets[3])
    ami = SHARED / "ami"
    yield "ami far field", _pair(read_wav(ami / "dev00.wav"), read_wav(ami / "trn00.wav"))
    yield "mfa clips", _pair(mfa, noise_floor(len(mfa)))
    yield "noise only", _pair(noises, noises[::-1].copy())
    yield "speech in noise", _pair(speech + 0.3 * _fit(noises, len(speech)), line)
    yield "clipped, dc", _pair(np.clip(speech * 200, -1, 1), line + 0.2)
    phone = ("rate", "8000", "rate", "16000")
    yield "8 kHz", _pair(sox(speech, *phone), sox(line, *phone))
    nan = line.copy()
    nan[5 * RATE_HZ:9 * RATE_HZ] = np.nan
    nan[20 * RATE_HZ:21 * RATE_HZ:3] = np.inf
    yield "nan", _pair(speech, nan)
    yield "dead line", _pair(speech[:15 * RATE_HZ], np.zeros(15 * RATE_HZ, np.float32))
    yield "dead headset", _pair(np.zeros(15 * RATE_HZ, np.float32), line[:15 * RATE_HZ])
    yield "stuck", _pair(np.full(8 * RATE_HZ, 0.5, np.float32), np.full(8 * RATE_HZ, np.nan, np.float32))
    tones, _, _ = build_call_timeline()  # ringback, busy, beeps, hold music and speech
    yield "tones and music", _pair(0.5 * _fit(headsets[0], len(tones)) + noise_floor(len(tones)), tones)
    square = np.sign(np.sin(2 * np.pi * 150 * np.arange(5 * RATE_HZ) / RATE_HZ)).astype(np.float32)
    yield "full scale", _pair(0.999 * square, np.random.default_rng(0).uniform(-1, 1, 5 * RATE_HZ))


def test_every_message_of_the_box_pipeline_over_every_kind_of_test_audio_is_in_range() -> None:
    """The ranges must never refuse the box's honest output: the real pipeline (VAD, prosody,
    conversation, cues, the prospect affect model, fatigue on a short baseline so that its drift
    fields come out) over every kind of audio the tests use; every message is encoded as the
    outbox does, and every field the contract has a range for comes out at least once."""
    campaign = replace(CampaignConfig(), affect=AffectDisclosure(disclosed=True),
                       fatigue=FatigueConfig(baseline_speech_s=30.0, track_speech_s=30.0))
    model = load_vad_model()
    seen: set[str] = set()
    refused: list[str] = []
    n_messages = 0
    for name, audio in _recordings():
        affect = AffectStage(AffectModel("litert"), AffectConfig(enabled=True))
        pipe = Pipeline(model, campaign=campaign, affect=affect)
        messages = []
        for i in range(0, audio.shape[1], RATE_HZ):
            messages += pipe(audio[:, i:i + RATE_HZ])
        messages += pipe.finish()
        for seq, m in enumerate(messages, 1):
            msg = {"v": wire.SCHEMA_VERSION, "site": "site-1", "box": "box-a",
                   "ts": round(time.time(), 3), "seq": seq, **m.body}
            try:
                wire.encode(m.kind, msg)
            except wire.WireError as exc:
                refused.append(f"{name}: {exc}")
            seen |= set(m.body)
        n_messages += len(messages)
    assert refused == [], refused[:10]
    assert n_messages > 1500
    produced = {n for n in wire.RANGES if n in wire.ALLOWED_FIELDS["metrics"]
                or n in wire.ALLOWED_FIELDS["event"]}
    assert sorted(produced - seen - {"v", "ts", "seq"}) == []  # each field was tried


def test_every_number_has_a_range_and_a_value_outside_it_is_named() -> None:
    """Each numeric field of every kind has its plausible range; the error names the field, the
    value and the range; the bounds themselves, and honest odd values (an expired certificate,
    a box numbering from 1, a stale clock), are accepted."""
    for kind, fields in wire.ALLOWED_FIELDS.items():
        for name, types in fields.items():
            if types not in ((str,), (bool,)):
                assert name in wire.RANGES, f"{kind}.{name}"
    base = {"v": 1, "site": "s", "box": "b", "ts": 1.0, "seq": 1, "talk_state": "agent"}
    for name in ("near_level_dbfs", "near_f0_median_hz", "latency_agent_ms_last", "fatigue_pitch_z",
                 "turns_agent_60s", "monologue_s_current", "near_rate_syl_s"):
        lo, hi = wire.RANGES[name]
        for ok in (lo, hi):
            wire.validate("metrics", {**base, name: ok})
        bad = hi * 10 if hi > 0 else hi + 1
        said = f"metrics.{name}: {bad!r} outside {lo:g}..{hi:g}"
        with pytest.raises(wire.WireError, match=re.escape(said)):
            wire.validate("metrics", {**base, name: bad})
    wire.status_message("s", "b", "online", 3.0, cert_days_left=-12.5, seq_last=0, seq_first=1,
                        seq_origin=1, clock_offset_ms=-480.0, cpu_temp_c=-20.0)
    with pytest.raises(wire.WireError, match=re.escape("status.seq_first: 4611686018427387904 outside")):
        wire.status_message("s", "b", "online", 3.0, seq_first=2**62)
    with pytest.raises(wire.WireError, match=re.escape("status.ts: 5000000000.0 outside 0..4.10244e+09")):
        wire.status_message("s", "b", "online", 5e9)
    assert wire.out_of_range({**base, "near_level_dbfs": float("nan"), "near_hnr_db": 12.0,
                              "far_jitter": 50.0}) == ["near_level_dbfs", "far_jitter"]


# --------------------------------------------- the box's own value out of range (a stage's bug)
def test_a_number_out_of_range_from_the_box_itself_drops_that_field_not_the_message(
        tmp_path: Path) -> None:
    """A stage's bug puts a number outside its range (or not finite) in a message: the box lost
    the whole message (counted in dropped), and a status counter out of range would have been
    refused by the contract at every status. Now the box leaves that field out, logs it and
    counts it in the status's ``fields_dropped``; the rest of the message is stored and sent."""
    from edge.box import Box
    from edge.pipeline import Message
    from edge.settings import EdgeSettings

    good = {"near_speech_ratio": 0.5, "far_speech_ratio": 0.0, "talk_state": "agent"}
    box = Box(EdgeSettings(site="site-a", box="box-a", broker_port=9, state_dir=tmp_path),
              pipeline=lambda block: [
                  Message("metrics", {**good, "near_level_dbfs": 1e9, "near_hnr_db": 12.0}),
                  Message("metrics", {**good, "near_f0_median_hz": float("nan")}),
                  Message("event", {"name": "speech_start", "channel": "near", "t_audio_s": -3.0})],
              version="test")
    box.source_status = lambda: {"capture_ok": True, "overruns": -1}  # type: ignore[method-assign]
    box.step(np.zeros((2, 512), dtype=np.float32))
    stored = [(kind, json.loads(p)) for _, kind, p in box.outbox.pending(limit=10)]
    assert [kind for kind, _ in stored] == ["metrics", "metrics", "event"]
    first, second, event = (m for _, m in stored)
    assert "near_level_dbfs" not in first and first["near_hnr_db"] == 12.0
    assert "near_f0_median_hz" not in second and second["talk_state"] == "agent"
    assert "t_audio_s" not in event and event["name"] == "speech_start"
    fields = box.status_fields()
    assert "overruns" not in fields and fields["dropped"] == 0
    assert fields["fields_dropped"] == 4
    wire.status_message("site-a", "box-a", "online", time.time(), version="test", **fields)
    box.outbox.close()

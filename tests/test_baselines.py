"""The agent's baselines survive a restart and the next shift (edge/baselines.py), on real speech."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from edge import baselines
from edge.box import Box
from edge.fatigue import FEATURES
from edge.pipeline import Pipeline, load_vad_model
from edge.settings import EdgeSettings
from edge.signals import AgentBaseline
from edge.source import read_wav

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RATE_HZ = 16_000
BLOCK = 1600


def _audio(seconds: float) -> np.ndarray:
    near = read_wav(SHARED / "ami-headsets" / "source0.wav", notice=False).samples
    far = read_wav(SHARED / "ami-headsets" / "source1.wav", notice=False).samples
    n = int(seconds * RATE_HZ)
    reps = n // len(near) + 1  # the headset recordings are a minute long: looped
    return np.stack([np.tile(near, reps)[:n], np.tile(far, reps)[:n]])


def _settings(state: Path, **kw) -> EdgeSettings:
    # no broker listens on port 9: the box runs offline, its outbox keeps the metrics
    return EdgeSettings(site="site-a", box="box-a", broker_port=9, state_dir=state, **kw)


def test_learned_baselines_are_saved_and_loaded_by_the_next_start(tmp_path: Path) -> None:
    model = load_vad_model()
    audio = _audio(240.0)
    pipe = Pipeline(model)
    for i in range(0, audio.shape[1], BLOCK):
        list(pipe(audio[:, i:i + BLOCK]))
    agent, fatigue = pipe.learned_baselines()
    assert agent is not None, "four minutes of the agent's speech teach the cue baseline"
    assert 3.0 < agent["pace_syl_s"] < 10.0 and -60 < agent["level_dbfs"] < 0
    assert set(agent) == {"pace_syl_s", "spectral_speed_db", "pitch_range_st", "level_dbfs"}
    state = tmp_path / "state"
    state.mkdir()
    assert baselines.save(state, agent, fatigue)
    learned_ts = json.loads((state / baselines.FILE).read_text())["learned_ts"]

    box = Box(_settings(state), model, version="test")
    loaded = box.pipeline.signals.baseline  # type: ignore[attr-defined]
    assert loaded.ready(0.0) and loaded.as_dict() == agent
    # ... and keeps them through a short run (nothing new learned) to the next start
    box.run(iter([audio[:, i:i + BLOCK] for i in range(0, 10 * RATE_HZ, BLOCK)]), drain_s=0.0)
    saved = json.loads((state / baselines.FILE).read_text())
    assert saved["agent"] == agent and "audio" not in json.dumps(saved)
    assert saved["learned_ts"] == learned_ts < saved["saved_ts"], "saving keeps when they were learned"


def test_old_or_corrupt_baselines_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / baselines.FILE
    agent = {"pace_syl_s": 6.0, "spectral_speed_db": 4.0, "pitch_range_st": 6.0, "level_dbfs": -30.0}
    assert baselines.save(tmp_path, {**agent, "rate_syl_s": 5.0}, None)  # as an older version saved
    loaded = baselines.load(tmp_path, 72.0).agent
    assert loaded is not None and loaded.ready(0.0) and loaded.as_dict() == agent
    # a file from before the pace existed: the rest is kept, the pace is learned before cues fire
    older = AgentBaseline.from_dict({k: v for k, v in agent.items() if k != "pace_syl_s"})
    assert not older.ready(0.0) and older.value("pitch_range_st") == 6.0
    older.pace_syl_s += [8.0] * 5  # a rushed greeting's five windows are no baseline
    assert not older.ready(60.0)
    # ... as from before the spectral speed (too fast reads the tempo only with its baseline)
    no_speed = AgentBaseline.from_dict({k: v for k, v in agent.items() if k != "spectral_speed_db"})
    assert not no_speed.ready(0.0) and no_speed.value("pace_syl_s") == 6.0
    # a format 1 file measured the pace another way: it is relearned, the rest is kept
    path.write_text(json.dumps({**json.loads(path.read_text()), "format": 1}))
    v1 = baselines.load(tmp_path, 72.0).agent
    assert v1 is not None and not v1.ready(0.0) and not v1.pace_syl_s and v1.value("level_dbfs") == -30.0
    assert baselines.save(tmp_path, agent, None)
    assert baselines.load(tmp_path, 0.0).agent is None  # 0: learn afresh at every start
    old = json.loads(path.read_text())
    old["learned_ts"] = time.time() - 100 * 3600
    path.write_text(json.dumps(old))
    assert baselines.load(tmp_path, 72.0) == baselines.Baselines()
    # re-saved every minute by a running box: still as old as when it was learned
    assert baselines.save(tmp_path, agent, None, learned_ts=old["learned_ts"])
    assert baselines.load(tmp_path, 72.0) == baselines.Baselines()
    fatigue = {"mean": {k: 1.0 for k in FEATURES}, "sd": {k: 0.5 for k in FEATURES}, "n": 300}
    assert baselines.save(tmp_path, None, fatigue)
    loaded_fatigue = baselines.load(tmp_path, 72.0).fatigue
    assert loaded_fatigue is not None and loaded_fatigue.as_dict() == fatigue
    one_feature = {"mean": {"pitch": 1.0}, "sd": {"pitch": 0.5}, "n": 300}  # the rest never learned
    misspelt = {"mean": {**fatigue["mean"], "pitchh": 1.0}, "sd": {**fatigue["sd"], "pitchh": 0.5}, "n": 300}
    readable_but_wrong = [({**agent, "pace_syl_s": 0.0}, None), ({**agent, "level_dbfs": "nan"}, None),
                          ({**agent, "level_dbfs": 30.0}, None), ({**agent, "pace_syl_s": True}, None),
                          (None, one_feature), (None, misspelt),
                          (None, {**fatigue, "sd": {**fatigue["sd"], "level": -1.0}}),
                          (None, {"mean": {"pitch": 1.0, "level": -30.0}, "sd": {"pitch": 0.5}, "n": 3})]
    for a, f in readable_but_wrong:  # would divide by zero or miss a key in the cue or fatigue stage
        assert baselines.save(tmp_path, a, f)
        assert baselines.load(tmp_path, 72.0) == baselines.Baselines(), (a, f)
    for learned_ts in (float("nan"), time.time() + 10 * 365 * 86400):  # would never grow old
        assert baselines.save(tmp_path, agent, None, learned_ts=learned_ts)
        assert baselines.load(tmp_path, 72.0) == baselines.Baselines(), learned_ts
    for junk in ("{not json", json.dumps({"format": 99}), json.dumps({"format": 1}), "[]"):
        path.write_text(junk)
        assert baselines.load(tmp_path, 72.0) == baselines.Baselines()
    assert not baselines.save(tmp_path, None, None)
    os.remove(path)
    assert baselines.load(tmp_path, 72.0) == baselines.Baselines()


def test_a_long_idle_gap_starts_a_new_shift_that_keeps_or_relearns_the_baselines() -> None:
    """A box that runs for days: after new_shift_idle_min with nobody speaking, the vocal dose and
    fatigue tracking start over; the baselines are kept, unless the box found them too old."""
    from edge.campaign import from_mapping

    pipe = Pipeline(load_vad_model(), campaign=from_mapping({"fatigue": {"new_shift_idle_min": 10}}))

    def feed(audio: np.ndarray) -> None:
        for i in range(0, audio.shape[1], BLOCK):
            list(pipe(audio[:, i:i + BLOCK]))

    gap = np.zeros((2, 610 * RATE_HZ), dtype=np.float32)  # the night: a dead headset, a dead line
    feed(_audio(240.0))
    agent, _ = pipe.learned_baselines()
    assert agent is not None and pipe.fatigue is not None and pipe.fatigue.phonation_s > 40.0
    feed(gap)
    assert pipe.shifts == 0, "nothing happens until somebody speaks again"
    feed(_audio(20.0))
    assert pipe.shifts == 1
    assert pipe.fatigue.phonation_s < 20.0, "the vocal dose is per shift"
    assert pipe.learned_baselines()[0] == agent, "the agent's baseline is kept"
    pipe.forget_baselines()  # what the box does once they are over baseline_max_age_h old
    feed(gap)
    feed(_audio(20.0))
    assert pipe.shifts == 2 and pipe.learned_baselines() == (None, None), "learned afresh"


def test_a_running_box_stops_keeping_baselines_past_their_age(tmp_path: Path, caplog) -> None:
    """Loaded at start when younger than baseline_max_age_h; once older, the box no longer saves
    them and has the next shift learn them afresh."""
    import logging

    agent = {"pace_syl_s": 6.0, "spectral_speed_db": 4.0, "pitch_range_st": 6.0, "level_dbfs": -30.0}
    max_age_h = 1.0
    assert baselines.save(tmp_path, agent, None, learned_ts=time.time() - max_age_h * 3600 + 1.0)
    box = Box(_settings(tmp_path, baseline_max_age_h=max_age_h), load_vad_model(), version="test")
    assert box.pipeline.learned_baselines()[0] == agent  # type: ignore[attr-defined]
    box.save_baselines()
    saved_ts = json.loads((tmp_path / baselines.FILE).read_text())["saved_ts"]
    time.sleep(1.2)
    with caplog.at_level(logging.INFO, logger="edge.box"):
        box.save_baselines()
    assert "learns them afresh" in caplog.text
    assert json.loads((tmp_path / baselines.FILE).read_text())["saved_ts"] == saved_ts
    assert box.pipeline._relearn  # type: ignore[attr-defined]


def _shift(agent: str, emotions: str, seed: int, turns: int) -> np.ndarray:
    """A call of ``turns`` exchanges: EmoDB speaker ``agent`` at the headset, speaker 03 on the line."""
    from tests._fixtures_signals import Builder, clips

    b = Builder(seed)
    b.agent = clips(agent, emotions)
    b.opening(turns)
    return b.build().audio


def _work(box: Box, audio: np.ndarray) -> tuple[list[tuple[str, float]], list[float | None]]:
    """Run the box over ``audio``; return its cues (name, audio s) and per-second fatigue index."""
    import sqlite3

    before = box.outbox.last_seq
    box.run(iter([audio[:, i:i + BLOCK] for i in range(0, audio.shape[1], BLOCK)]), drain_s=0.0)
    with sqlite3.connect(box.settings.state_dir / "outbox.sqlite") as db:
        rows = [json.loads(p) for (p,) in db.execute(
            "SELECT payload FROM outbox WHERE seq > ? ORDER BY seq", (before,))]
    cues = [(r["cue"], r["t_audio_s"]) for r in rows if r.get("name") == "cue_on"]
    return cues, [r.get("fatigue_index") for r in rows if "talk_state" in r]


def _forget(box: Box, changed_ts: float) -> str:
    """The dashboard's ``forget_baselines`` for a seat change at ``changed_ts``, as the box gets it."""
    from miroir import wire

    cmd = wire.cmd_message("site-a", "box-a", "forget_baselines", changed_ts)
    return box.handle_command(box.publisher.cmd_topic, wire.encode(wire.CMD_KIND, cmd))


def test_a_seat_given_to_another_agent_forgets_the_previous_agents_baselines(tmp_path: Path) -> None:
    """Agent A (EmoDB speaker 03, male) works a shift; the box keeps A's baselines. The seat goes to
    agent B (speaker 08, female): without the dashboard's ``forget_baselines`` B was judged against
    A's voice from B's first second (fatigue index 55 median, a break suggested after 8 minutes,
    two too_fast cues missed, on 8 minutes of B). With it, B's cues, fatigue and saved baselines
    are a fresh box's; the command sent again later (a resend) leaves B's own baselines alone."""
    model = load_vad_model()
    seat, fresh = tmp_path / "seat", tmp_path / "fresh"
    _work(Box(_settings(seat), model, version="test"), _shift("03", "", 7, 80))
    a_saved = json.loads((seat / baselines.FILE).read_text())
    assert a_saved["agent"] and a_saved["fatigue"], "A's shift taught both baselines"
    b_audio = _shift("08", "N", 9, 40)

    changed_ts = time.time()  # the seat goes to B, after A's baselines were learned
    box = Box(_settings(seat), model, version="test")  # the next morning: A's baselines loaded
    assert box.pipeline.learned_baselines()[0] == a_saved["agent"]  # type: ignore[attr-defined]
    assert _forget(box, changed_ts) == "forget_baselines" and box.cmd_refused == 0
    assert not (seat / baselines.FILE).exists(), "A's baselines leave the box at once"
    assert box.status_fields()["baselines_ts"] >= changed_ts
    b_cues, b_fatigue = _work(box, b_audio)
    fresh_cues, fresh_fatigue = _work(Box(_settings(fresh), model, version="test"), b_audio)
    print(f"B after the seat change: cues {b_cues}; at a fresh box: {fresh_cues}")
    assert b_cues == fresh_cues and b_fatigue == fresh_fatigue
    assert b_fatigue[0] is None, "no fatigue index before B's own baseline is learned"
    b_saved = json.loads((seat / baselines.FILE).read_text())
    assert b_saved["agent"] == json.loads((fresh / baselines.FILE).read_text())["agent"]
    assert b_saved["learned_ts"] >= changed_ts

    again = Box(_settings(seat), model, version="test")  # restarted; the command comes again
    assert _forget(again, changed_ts) == "forget_baselines"
    assert json.loads((seat / baselines.FILE).read_text()) == b_saved, "B's own baselines are kept"
    assert not again.relearn_pending and again.pipeline.learned_baselines()[0] == b_saved["agent"]  # type: ignore[attr-defined]
    assert _forget(again, time.time() + 3600) == "refused", "a seat change an hour ahead"
    again.outbox.close()

"""The agent's baselines survive a restart and the next shift (edge/baselines.py), on real speech."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from edge import baselines
from edge.box import Box
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
    assert 2.0 < agent["rate_syl_s"] < 9.0 and -60 < agent["level_dbfs"] < 0
    assert agent["rate_syl_s"] < agent["pace_syl_s"] < 10.0  # the pace leaves pauses out
    state = tmp_path / "state"
    state.mkdir()
    assert baselines.save(state, agent, fatigue)

    box = Box(_settings(state), model, version="test")
    loaded = box.pipeline.signals.baseline  # type: ignore[attr-defined]
    assert loaded.ready(0.0) and loaded.as_dict() == agent
    # ... and keeps them through a short run (nothing new learned) to the next start
    box.run(iter([audio[:, i:i + BLOCK] for i in range(0, 10 * RATE_HZ, BLOCK)]), drain_s=0.0)
    saved = json.loads((state / baselines.FILE).read_text())
    assert saved["agent"] == agent and "audio" not in json.dumps(saved)


def test_old_or_corrupt_baselines_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / baselines.FILE
    agent = {"rate_syl_s": 5.0, "pace_syl_s": 6.0, "pitch_range_st": 6.0, "level_dbfs": -30.0}
    assert baselines.save(tmp_path, agent, None)
    loaded = baselines.load(tmp_path, 72.0).agent
    assert loaded is not None and loaded.ready(0.0)
    # a file from before the pace existed: the rest is kept, the pace is learned before cues fire
    older = AgentBaseline.from_dict({k: v for k, v in agent.items() if k != "pace_syl_s"})
    assert not older.ready(0.0) and older.value("rate_syl_s") == 5.0
    assert baselines.load(tmp_path, 0.0).agent is None  # 0: learn afresh at every start
    old = json.loads(path.read_text())
    old["saved_ts"] = time.time() - 100 * 3600
    path.write_text(json.dumps(old))
    assert baselines.load(tmp_path, 72.0) == baselines.Baselines()
    for junk in ("{not json", json.dumps({"format": 99}), json.dumps({"format": 1})):
        path.write_text(junk)
        assert baselines.load(tmp_path, 72.0) == baselines.Baselines()
    assert not baselines.save(tmp_path, None, None)
    os.remove(path)
    assert baselines.load(tmp_path, 72.0) == baselines.Baselines()

"""The affect model feeds the prospect-tense cue: real angry speech on the line raises it, calm
speech does not, and with affect off (the default) the cue never exists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.affect import AffectConfig, AffectModel, AffectStage
from edge.pipeline import Pipeline, load_vad_model
from edge.source import read_wav

EMODB = Path(__file__).resolve().parents[2] / "shared" / "data" / "emodb" / "wav"
RATE_HZ = 16_000


def _prospect_call(letter: str, speaker: str = "16") -> np.ndarray:
    """The agent says a little, then the prospect (far) speaks ~40 s of one emotion's clips."""
    clips = sorted(EMODB.glob(f"{speaker}*{letter}*.wav"))
    assert len(clips) >= 4, letter
    gap = np.zeros(int(0.4 * RATE_HZ), dtype=np.float32)
    far = np.concatenate([x for c in (clips * 6)[:20] for x in (read_wav(c, notice=False).samples, gap)])
    agent = read_wav(sorted(EMODB.glob("03*N*.wav"))[0], notice=False).samples
    pause = np.zeros(RATE_HZ, dtype=np.float32)
    near = np.concatenate([agent, pause, np.zeros_like(far)])
    far = np.concatenate([np.zeros_like(agent), pause, far])
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal((2, len(far))) * 1e-4).astype(np.float32)
    return np.stack([near, far]) + noise


def _cues(audio: np.ndarray, affect: bool) -> tuple[list[str], list[float]]:
    stage = None
    if affect:
        config = AffectConfig(enabled=True)
        stage = AffectStage(AffectModel(config.backend), config)
    pipe = Pipeline(load_vad_model(), affect=stage)
    cues, tension = [], []
    for i in range(0, audio.shape[1], 1024):
        for msg in pipe(audio[:, i:i + 1024]):
            if msg.kind == "event" and msg.body["name"] == "cue_on":
                cues.append(msg.body["cue"])
            if msg.kind == "metrics" and "prospect_tension" in msg.body:
                tension.append(msg.body["prospect_tension"])
    return cues, tension


@pytest.mark.parametrize("letter,tense", [("W", True), ("N", False)])
def test_prospect_tense_cue_follows_the_affect_model(letter: str, tense: bool) -> None:
    cues, tension = _cues(_prospect_call(letter), affect=True)
    assert len(tension) >= 10, "the affect model ran on the prospect's speech"
    print(f"{letter}: median tension {np.median(tension):.2f}, cues {cues}")
    assert ("prospect_tense" in cues) is tense


def test_no_affect_no_tension_and_no_tense_cue_by_default() -> None:
    cues, tension = _cues(_prospect_call("W"), affect=False)
    assert tension == [] and "prospect_tense" not in cues


def test_analyze_with_affect_raises_what_the_box_raises() -> None:
    """`miroir analyze --affect` runs the affect stage inside the pipeline, as a box does: the
    tense prospect's cue is in its cues and its call summary (it could never fire there)."""
    from edge.pipeline import analyze

    result = analyze(_prospect_call("W"), load_vad_model(), affect=AffectConfig(enabled=True))
    assert sum("prospect_tension" in m for m in result["metrics"]) >= 10
    assert "prospect_tense" in [c["cue"] for c in result["cues"]]
    assert [s["call_cue_prospect_tense_n"] for s in result["call_summaries"]] == [1]
    assert result["affect"]["enabled"] and result["affect"]["far"]["windows"]

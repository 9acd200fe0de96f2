"""Fatigue index on a synthetic 60-minute shift of one speaker's real speech, with and without drift."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from edge.pipeline import Pipeline, load_vad_model
from miroir import wire
from tests._fixtures_fatigue import Shift, shift_drift, shift_steady  # noqa: F401  (session fixtures)


@pytest.fixture(scope="module")
def model():
    return load_vad_model()


def run_shift(shift: Shift, model) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Run the whole pipeline (agent on near, a silent line) and return per-minute index, drift."""
    audio = np.zeros((2, len(shift.audio)), dtype=np.float32)
    audio[0] = shift.audio
    pipe = Pipeline(model)
    metrics, events = [], []
    for i in range(0, audio.shape[1], 160000):
        for m in pipe(audio[:, i:i + 160000]):
            (metrics if m.kind == "metrics" else events).append(m.body)
    minutes = len(shift.drift)
    index = np.full(minutes, np.nan)
    for k in range(minutes):
        vals = [m["fatigue_index"] for m in metrics
                if "fatigue_index" in m and k * 60 <= m["t_start"] < (k + 1) * 60]
        if vals:
            index[k] = np.mean(vals)
    header = {"v": wire.SCHEMA_VERSION, "site": "s1", "box": "b1", "ts": 1.0, "seq": 1}
    for m in metrics[-5:]:
        wire.validate("metrics", {**header, **m})
    return index, shift.drift, metrics + events


def test_drifting_shift_raises_the_index_and_suggests_a_break(shift_drift, model):  # noqa: F811
    """+1 semitone and -2 dB over 60 minutes: Spearman >= 0.8 with the drift, and a break."""
    index, drift, msgs = run_shift(shift_drift, model)
    ok = ~np.isnan(index)
    rho = spearmanr(index[ok], drift[ok])[0]
    print(f"drift shift: index per minute {np.round(index).tolist()}; Spearman {rho:.3f}")
    assert ok.sum() >= 40  # the baseline is learned in the first minutes
    assert rho >= 0.8
    breaks = [e for e in msgs if e.get("name") == "cue_on" and e["cue"] == "take_break"]
    assert breaks, "no break suggested"
    print(f"break suggested at {breaks[0]['t_audio_s'] / 60:.1f} min")
    assert any(m.get("break_suggested") for m in msgs)
    assert not any("emotion" in k for m in msgs for k in m)


def test_steady_shift_suggests_no_break(shift_steady, model):  # noqa: F811
    index, _, msgs = run_shift(shift_steady, model)
    print(f"steady shift: index per minute {np.round(index).tolist()}")
    assert not any(m.get("break_suggested") for m in msgs)
    assert not any(e.get("name") == "cue_on" and e.get("cue") == "take_break" for e in msgs)
    assert np.nanmax(index) < 60

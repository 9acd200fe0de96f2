"""Fatigue index on a synthetic 60-minute shift of one speaker's real speech, with and without drift."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from tests._fixtures_fatigue import shift_results  # noqa: F401  (session fixture)


def test_drifting_shift_raises_the_index_and_suggests_a_break(shift_results):  # noqa: F811
    """+1 semitone and -2 dB over 60 minutes: Spearman >= 0.8 with the drift, and a break."""
    index, drift, msgs = shift_results["drift"]
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


def test_steady_shift_suggests_no_break(shift_results):  # noqa: F811
    index, _, msgs = shift_results["steady"]
    print(f"steady shift: index per minute {np.round(index).tolist()}")
    assert not any(m.get("break_suggested") for m in msgs)
    assert not any(e.get("name") == "cue_on" and e.get("cue") == "take_break" for e in msgs)
    assert np.nanmax(index) < 60

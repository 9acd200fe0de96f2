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


def test_every_answer_counts_once_in_the_latency_drift():
    """Latencies come in 32 ms steps, so equal ones in a row are common: each new answer counts,
    a tick that reads the same answer again does not, nor one while a side has no signal."""
    from edge.fatigue import LATENCY_RESPONSES, Fatigue, FatigueBaseline

    fatigue = Fatigue(baseline=FatigueBaseline({"latency": 0.5}, {"latency": 0.1}, 100))

    def expected_z(latencies_s: list[float]) -> float:
        se = max(0.05, 0.1 * np.sqrt(1 / len(latencies_s) + 1 / LATENCY_RESPONSES))
        return (float(np.mean(latencies_s)) - 0.5) / se

    for answers in range(1, 6):  # one call: five answers of 1504 ms each, each read on two ticks
        for _ in range(2):
            state = fatigue(None, 1.0, 1504.0, answers)
    assert state.z["latency"] == expected_z([1.504] * 5)
    fatigue(None, 1.0, None, 0)  # between calls
    state = fatigue(None, 1.0, 512.0, 1)  # the next call's first answer, the same count as before
    state = fatigue(None, 1.0, 512.0, None)  # the line drops out: nothing known, nothing counted
    state = fatigue(None, 1.0, 512.0, 1)  # back: the same answer
    assert state.z["latency"] == expected_z([1.504] * 5 + [0.512])


def test_no_break_at_an_index_under_break_on_even_with_no_hold_time():
    """``break_min_s = 0`` (a valid setting) means "at once", not "always": an index under
    ``break_on`` never suggests a break (it flapped on and off every second)."""
    from edge.campaign import FatigueConfig
    from edge.fatigue import Fatigue, FatigueBaseline

    fatigue = Fatigue(FatigueConfig(break_min_s=0.0), FatigueBaseline({"latency": 0.5},
                                                                      {"latency": 0.1}, 100))
    states = [fatigue(None, 1.0) for _ in range(10)]
    assert all(s.index is not None and s.index < 60.0 and not s.break_suggested for s in states)

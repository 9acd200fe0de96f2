"""Edge prosody against Praat (parselmouth, test-only) and the EmoDB syllable labels.

The accuracy figures come from ``bench.accuracy_prosody.prosody_figures(step=3)``: every third EmoDB
clip in name order (137 clips, all 8 speakers), noise mixed in at 10 dB SNR for the noisy pitch, and
every fourth of those time-stretched by sox for the tempo check.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.accuracy_prosody import EMODB, clip_names, prosody_figures, read_wav, tempo_window_figures
from edge.campaign import CampaignConfig
from edge.prosody import HOP_S, Prosody, ProsodyWindow, analyze_clip

RATE = 16_000


@pytest.fixture(scope="module")
def figures() -> dict:
    return prosody_figures(step=3, cost=False)


def test_subset_covers_every_speaker() -> None:
    names = clip_names(3)
    assert len(names) >= 120
    assert {n[:2] for n in names} == {"03", "08", "09", "10", "12", "13", "15", "16"}


def test_pitch_matches_praat(figures: dict) -> None:
    assert figures["pitch_gpe"] <= 0.03
    assert figures["pitch_voicing_agree"] >= 0.85


def test_pitch_in_noise(figures: dict) -> None:
    assert figures["pitch_gpe_noisy"] <= 0.08


def test_voice_quality_tracks_praat(figures: dict) -> None:
    assert figures["hnr_r"] >= 0.8
    assert figures["shimmer_r"] >= 0.8
    assert figures["jitter_r"] >= 0.8


RATE_R_GUARD = 0.75
"""Regression guard, NOT the issue's bar. Issue 3 asks r >= 0.8; the shipped estimator measures
r = 0.776 on all 411 clips, and 0.764 with its six constants chosen leaving out both speaker and
sentence (``bench.accuracy_prosody.rate_cv_figures``), above a faithful de Jong & Wempe port (0.62)
but short of the bar, which stays open (see README, "Measured")."""


def test_speaking_rate_tracks_labels(figures: dict) -> None:
    print(f"speaking rate r = {figures['rate_r']:.3f} (issue bar 0.8, not reached)")
    assert figures["rate_r"] >= RATE_R_GUARD


def test_tempo_changes_the_rate_in_proportion(figures: dict) -> None:
    assert figures["tempo_ratio_err"] <= 0.10


def _tone(f0_hz: float, seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    x = sum(np.sin(2 * np.pi * f0_hz * h * t) / h for h in range(1, 6))
    return (amp * x / np.max(np.abs(x))).astype(np.float32)


@pytest.mark.parametrize("f0_hz", [80.0, 150.0, 320.0])
def test_harmonic_tone_pitch(f0_hz: float) -> None:
    out = analyze_clip(_tone(f0_hz, 1.0))
    f0 = np.array(out["f0_hz"])
    voiced = np.array(out["voiced"])
    assert voiced[10:-10].all()
    assert np.median(f0[voiced]) == pytest.approx(f0_hz, rel=0.01)
    assert out["jitter_local"] is not None and out["jitter_local"] < 0.01


def test_streaming_equals_offline_and_frames_any_size() -> None:
    x = read_wav(EMODB / "wav" / clip_names()[0])
    offline = analyze_clip(x)
    pros = Prosody()
    for i in range(0, len(x), 333):
        pros(x[i:i + 333])
    win = pros.window(10.0, flush=True)
    assert isinstance(win, ProsodyWindow)
    assert pros.hops().f0_hz.tolist() == pytest.approx(offline["f0_hz"], abs=0.01)
    assert win.articulation_rate_syl_s == pytest.approx(offline["articulation_rate_syl_s"], abs=1e-3)
    assert len(offline["f0_hz"]) == len(x) // 160


def test_catching_up_analyses_the_last_second_and_changes_no_hop() -> None:
    """The pipeline catches the agent's stage up at every metrics window (``Prosody.catch_up``):
    the hops are there a batch earlier, and each is the one the batches give."""
    x = np.concatenate([read_wav(EMODB / "wav" / n) for n in clip_names()[:3]])
    batched, caught_up = Prosody(history_s=60.0), Prosody(history_s=60.0)
    lag_s = []
    for i in range(0, len(x), 512):
        batched(x[i:i + 512])
        caught_up(x[i:i + 512])
        if (i // 512) % 31 == 30:  # about once a second
            caught_up.catch_up()
            heard_s = (i + 512) / RATE
            lag_s.append(heard_s - caught_up.hops().t_s[-1])
    assert max(lag_s) < 0.1, "caught up to its lookahead"
    batched.flush()
    caught_up.flush()
    a, b = batched.hops(), caught_up.hops()
    for name in ("f0_hz", "level_dbfs", "syllabic_db", "spectral_change_db", "spectral_speed_db"):
        assert np.allclose(getattr(a, name), getattr(b, name), equal_nan=True, atol=1e-3), name
    assert (a.voiced == b.voiced).all()


def test_the_tempo_tells_fast_speech_from_the_same_voice_better_than_the_pace() -> None:
    """Each agent's turns played 1.3 times faster (sox tempo, pitch kept) against its normal ones,
    over the ``too_fast`` cue's 3 s windows: the spectral speed errs apart from the pace, so the two
    combined (``edge.rate.tempo_ratio``) catch far more fast windows at a threshold that one normal
    window in 50 crosses than the pace alone (measured 0.94 against 0.76, AUC 1.000 against 0.986)."""
    figs = tempo_window_figures(CampaignConfig().too_fast.window_s)
    print(figs)
    caught = figs["tempo_windows_caught_at_2pct"]
    assert caught["tempo"] >= 0.9 and caught["tempo"] >= caught["pace"] + 0.1
    assert figs["tempo_windows_auc"]["tempo"] >= 0.99
    assert 1.05 <= figs["tempo_windows_read_1_3x"]["speed"] <= 1.3, "the speed moves with the tempo"


def test_window_covers_only_the_last_seconds() -> None:
    x = np.concatenate([read_wav(EMODB / "wav" / n) for n in clip_names()[:5]])  # 10 s
    pros = Prosody(history_s=6.0)
    for i in range(0, len(x), 512):
        pros(x[i:i + 512])
    win = pros.window(3.0, flush=True)
    assert win.end_s == pytest.approx(10.0, abs=HOP_S)
    assert win.end_s - win.start_s == pytest.approx(3.0, abs=2 * HOP_S)
    assert pros.hops().t_s[0] >= 10.0 - 6.0 - 1.0  # older history dropped


def test_pauses_between_utterances() -> None:
    a, b, c = (read_wav(EMODB / "wav" / n) for n in clip_names()[:3])

    def speech(x: np.ndarray) -> np.ndarray:  # the clip's voiced stretch, no trailing padding
        v = np.array(analyze_clip(x)["voiced"])
        idx = np.nonzero(v)[0]
        return x[idx[0] * 160: (idx[-1] + 1) * 160]

    gap = np.zeros(int(0.6 * RATE), dtype=np.float32)
    x = np.concatenate([speech(a), gap, speech(b), gap, speech(c)])
    out = analyze_clip(x)
    assert out["pauses"] >= 2
    assert out["pauses_per_min"] == pytest.approx(60 * out["pauses"] / (len(x) / RATE), rel=0.02)
    assert out["pause_s_mean"] is not None and out["pause_s_mean"] >= 0.5


def test_pauses_against_the_emodb_pause_labels() -> None:
    """Half the labelled pauses of 200 ms or more are found, and under one gap per minute of speech
    is no labelled pause (stop closures of 150-200 ms used to count: 3.9 per minute)."""
    from bench.accuracy_prosody import pause_figures

    figs = pause_figures()
    print(figs)
    assert figs["pause_labelled"] >= 30
    assert figs["pause_recall"] >= 0.5
    assert figs["pause_false_per_min"] <= 1.0


def test_hesitation_sounds_against_transcribed_fillers_and_fluent_speech() -> None:
    """Filled pauses counted in the MFA transcripts are found, with almost no false ones on fluent
    speech: 13.7 minutes of EmoDB's read sentences and the MFA clips without a filler."""
    from bench.accuracy_prosody import hesitation_figures

    figs = hesitation_figures()
    print(figs)
    assert figs["hesitation_fillers"] == 18 and figs["hesitation_mfa_clean_clips"] >= 40
    assert figs["hesitation_fillers_found"] >= 8
    assert figs["hesitation_false_mfa"] <= 1
    assert figs["hesitation_false_per_min_emodb"] <= 0.1
    assert figs["hesitation_drawn_out"] >= 1  # a drawn-out word is a hesitation sound too


def test_a_held_vowel_is_a_hesitation_sound_and_a_gliding_one_is_not() -> None:
    """Half a second of a steady voiced vowel-like sound counts once; the same sound gliding an
    octave (a melody, not a hesitation) or lasting 0.2 s does not count."""
    def vowel(f0_start_hz: float, f0_end_hz: float, seconds: float) -> np.ndarray:
        t = np.arange(int(seconds * RATE)) / RATE
        f0 = np.linspace(f0_start_hz, f0_end_hz, len(t))
        phase = 2 * np.pi * np.cumsum(f0) / RATE
        # harmonics shaped like a schwa: formant-like peaks near 500, 1500 and 2500 Hz
        x = sum(np.sin(k * phase) / k * (1 + 3 * np.exp(-((k * f0 - 500) / 200) ** 2)
                                         + 2 * np.exp(-((k * f0 - 1500) / 250) ** 2)
                                         + np.exp(-((k * f0 - 2500) / 300) ** 2))
                for k in range(1, 30))
        return (0.1 * x / np.abs(x).max()).astype(np.float32)

    pad = np.zeros(RATE // 2, dtype=np.float32)
    for sound, want in ((vowel(120, 118, 0.5), 1), (vowel(120, 240, 0.5), 0),
                        (vowel(120, 118, 0.2), 0)):
        out = analyze_clip(np.concatenate([pad, sound, pad]))
        assert out["hesitations"] == want, (want, out["hesitations"])


def test_hesitation_sounds_split_by_a_break_do_not_overlap() -> None:
    """A sound starts 50 ms before its first steady hop, but never inside the sound before it."""
    from edge.rate import hesitations

    n = 80
    t_s = (np.arange(n) + 0.5) * 0.01
    change = np.full(n, 0.5)
    change[40:43] = 5.0  # a 3-hop break: too long to bridge
    got = hesitations(t_s, np.full(n, 120.0), np.ones(n, dtype=bool), change)
    assert len(got) == 2 and got[0][1] <= got[1][0], got


def test_a_filled_pause_is_a_hesitation_sound_the_voice_goes_on_after() -> None:
    """A sound followed within 1 s by 0.1 s or more of the same voice is a filled pause; one
    followed by silence (a backchannel hum, a drawn-out last word), by the fading vowel's own
    tail, or by voice that is not in the track yet, is not."""
    from edge.rate import filled_pauses

    n = 300
    t_s = (np.arange(n) + 0.5) * 0.01
    sound = [(0.5, 1.0)]

    def voiced(*spans: tuple[int, int]) -> np.ndarray:
        v = np.zeros(n, dtype=bool)
        for a, b in spans:
            v[a:b] = True
        return v

    assert filled_pauses(sound, t_s, voiced((50, 100), (140, 160))) == sound  # "euh... je"
    assert filled_pauses(sound, t_s, voiced((50, 100))) == []  # nothing after
    assert filled_pauses(sound, t_s, voiced((50, 110))) == []  # only its tail
    assert filled_pauses(sound, t_s, voiced((50, 100), (205, 230))) == []  # over 1 s later
    assert filled_pauses(sound, t_s[:105], voiced((50, 100))[:105]) == []  # the rest unseen yet


def test_bad_input_fabricates_nothing() -> None:
    silent = analyze_clip(np.zeros(2 * RATE, dtype=np.float32))
    assert silent["voiced_ratio"] == 0.0
    assert silent["f0_median_hz"] is None and silent["articulation_rate_syl_s"] is None
    assert silent["jitter_local"] is None and silent["pauses"] == 0
    assert silent["hesitations"] == 0
    broken = _tone(150.0, 1.0)
    broken[1000:3000] = np.nan
    out = analyze_clip(broken)
    assert np.all(np.isfinite(out["f0_hz"])) and np.all(np.isfinite(out["level_dbfs_track"]))
    assert isinstance(out["level_dbfs"], float)  # the mean voiced level, kept beside its track
    with pytest.raises(ValueError):
        analyze_clip(np.zeros(8000, dtype=np.float32), 8000)


def test_pace_ignores_pauses_the_articulation_rate_counts() -> None:
    """The same three utterances with 0.3 s or 1.5 s between them: the pace (what too_fast reads)
    moves by under 3 %, the articulation rate (first to last nucleus) drops by over 15 %."""
    clips = [read_wav(EMODB / "wav" / n) for n in clip_names()[:3]]

    def joined(gap_s: float) -> dict:
        gap = np.zeros(int(gap_s * RATE), dtype=np.float32)
        return analyze_clip(np.concatenate([clips[0], gap, clips[1], gap, clips[2]]))

    short, long = joined(0.3), joined(1.5)
    assert short["syllables"] == long["syllables"] >= 15
    assert long["pace_syl_s"] == pytest.approx(short["pace_syl_s"], rel=0.03)
    assert long["articulation_rate_syl_s"] < 0.85 * short["articulation_rate_syl_s"]
    assert short["pace_syl_s"] > short["articulation_rate_syl_s"]


def test_rate_window_matches_the_full_window() -> None:
    """The cues' cheap rate-only window gives the same rate, pace and pauses as the full one."""
    x = np.concatenate([read_wav(EMODB / "wav" / n) for n in clip_names()[:4]])
    pros = Prosody(history_s=10.0)
    for i in range(0, len(x), 512):
        pros(x[i:i + 512])
    for seconds in (CampaignConfig().too_fast.window_s, CampaignConfig().too_slow.window_s):
        full, cheap = pros.window(seconds), pros.rate_window(seconds)
        assert cheap.syllables == full.syllables >= 8 and cheap.pauses == full.pauses
        assert (cheap.voiced_ratio, cheap.articulation_rate_syl_s, cheap.pace_syl_s) == (
            full.voiced_ratio, full.articulation_rate_syl_s, full.pace_syl_s)


def test_percentile_is_numpys_to_the_last_bit():
    """The windows' fast percentile gives np.percentile's exact value (float32 and float64)."""
    from edge.rate import percentile

    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        for n in [*range(1, 40), 99, 100, 1000, 1001]:
            x = (rng.standard_normal(n) * 20 - 40).astype(dtype)
            for q in (0, 5, 10, 50, 90, 95, 100):
                assert percentile(x, q) == float(np.percentile(x, q)), (dtype, n, q)


def test_no_rate_per_minute_from_a_window_of_a_second() -> None:
    """Just after a start (or private mode, or a lost headset) the prosody window covers a second
    or so: one pause in it is not 60 pauses a minute; from 5 s of window on, the rates come."""
    from edge.pipeline import prosody_fields

    def window(span_s: float) -> ProsodyWindow:
        return ProsodyWindow(start_s=0.0, end_s=span_s, voiced_ratio=0.6, level_dbfs=-20.0,
                             f0_median_hz=120.0, pitch_range_st=6.0, pitch_movement_st_per_s=1.0,
                             hnr_db=10.0, jitter_local=0.01, shimmer_local=0.05, syllables=4,
                             articulation_rate_syl_s=5.0, pace_syl_s=5.0, speaking_rate_syl_s=4.0,
                             pauses=1, pauses_per_min=60.0 / span_s, breaths=1, pause_s_mean=0.3)

    short, full = prosody_fields(window(0.99)), prosody_fields(window(10.0))
    assert "near_pauses_per_min" not in short and "near_breaths_per_min" not in short
    assert "near_level_dbfs" in short
    assert full["near_pauses_per_min"] == 6.0 and full["near_breaths_per_min"] == 6.0


def test_a_breath_is_a_bump_inside_the_pause_not_its_edges_nor_fed_silence() -> None:
    """The hops next to the voice hold its unvoiced onset and tail (20 dB over the floor); a
    closed gate feeds digital silence (-120 dBFS): neither is a breath. A bump in the middle is."""
    from edge.rate import pauses

    def track(gap: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        voice = [-20.0] * 30
        level = np.array(voice + gap + voice)
        voiced = np.array([True] * 30 + [False] * len(gap) + [True] * 30)
        return (np.arange(len(level)) + 0.5) * HOP_S, level, voiced

    edges = [-36.0, -39.0, -40.0, -41.0] + [-55.0] * 40 + [-41.0, -38.0, -36.0]
    zeros = [-55.0] * 20 + [-120.0] * 25
    bump = [-55.0] * 15 + [-52.0, -48.0, -44.0, -42.0, -42.0, -44.0, -48.0, -52.0] + [-55.0] * 15
    for gap, breath in ((edges, False), (zeros, False), (bump, True)):
        found = pauses(*track(gap))
        assert len(found) == 1 and found[0].breath is breath, (gap, found)


def test_mains_hum_under_speech_is_no_pitch() -> None:
    """50 Hz mains hum at -30 dBFS under a man's speech: the hum alone is no voice, and the pitch
    range and median read as without it (the hum read as a 58.8 Hz voice, a period at the end of
    the searched lags: the range went from 8 to 15 st, 31 st for a high voice)."""
    t = np.arange(2 * RATE) / RATE
    hum = (10 ** (-30 / 20) * np.sqrt(2) * np.sin(2 * np.pi * 50 * t)).astype(np.float32)
    assert not any(analyze_clip(hum)["voiced"])
    clips = [n for n in clip_names() if n.startswith("03") and n[5] == "N"][:6]
    x = np.concatenate([read_wav(EMODB / "wav" / n) for n in clips])
    x += np.random.default_rng(0).standard_normal(len(x)).astype(np.float32) * 10 ** (-65 / 20)
    clean, hummed = analyze_clip(x), analyze_clip(x + np.tile(hum, len(x) // len(hum) + 1)[:len(x)])
    print({k: (clean[k], hummed[k]) for k in ("f0_median_hz", "pitch_range_st", "voiced_ratio")})
    assert hummed["pitch_range_st"] == pytest.approx(clean["pitch_range_st"], abs=1.5)
    assert hummed["f0_median_hz"] == pytest.approx(clean["f0_median_hz"], rel=0.05)
    assert hummed["voiced_ratio"] <= clean["voiced_ratio"] + 0.02


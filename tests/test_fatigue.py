"""Fatigue index on a synthetic 60-minute shift of one speaker's real speech, with and without drift."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy.stats import spearmanr


def test_drifting_shift_raises_the_index_and_suggests_a_break(shift_results):
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


def test_steady_shift_suggests_no_break(shift_results):
    index, _, msgs = shift_results["steady"]
    print(f"steady shift: index per minute {np.round(index).tolist()}")
    assert not any(m.get("break_suggested") for m in msgs)
    assert not any(e.get("name") == "cue_on" and e.get("cue") == "take_break" for e in msgs)
    assert np.nanmax(index) < 60


def test_every_answer_counts_once_in_the_latency_drift():
    """Two answers inside one metrics second both reach the latency drift (the fatigue stage used
    to read only the window's last latency), and an answer taken once is not read again."""
    from edge.conversation import Conversation, ConversationConfig
    from edge.fatigue import LATENCY_RESPONSES, Fatigue, FatigueBaseline

    conv = Conversation(ConversationConfig(reorder_s=0.0))
    # the prospect speaks 1.0-2.0 s and 2.2-2.5 s; the agent answers at 2.05 s ("oui") and, a new
    # turn (0.7 s after its last words), at 2.9 s
    marks = [(1.0, "far", "start"), (2.0, "far", "end"), (2.05, "near", "start"), (2.15, "near", "end"),
             (2.2, "far", "start"), (2.5, "far", "end"), (2.9, "near", "start"), (3.5, "near", "end")]
    state = {"near": False, "far": False}
    taken: list[list[float]] = []
    frame_s = 0.032
    for k in range(int(5.0 / frame_s)):
        start, end = k * frame_s, (k + 1) * frame_s
        transitions = [(ch, change, t) for t, ch, change in marks if start <= t < end]
        for _, ch, change in [m for m in marks if start <= m[0] < end]:
            state[ch] = change == "start"
        conv(start, frame_s, state["near"], state["far"], transitions)
        if int(end) != int(start):  # a metrics window ends each second
            taken.append([r.latency_s for r in conv.take_responses() if r.channel == "near"])
    assert [[round(x, 3) for x in w] for w in taken] == [[], [], [0.05, 0.4], []]
    assert conv.metrics()["responses_agent"] == 2

    fatigue = Fatigue(baseline=FatigueBaseline({"latency": 0.5}, {"latency": 0.1}, 100))

    def expected_z(latencies_s: list[float]) -> float:
        se = max(0.05, 0.1 * np.sqrt(1 / len(latencies_s) + 1 / LATENCY_RESPONSES))
        return (float(np.mean(latencies_s)) - 0.5) / se

    for _ in range(2):  # five answers of 1.504 s, then a window with two more
        for _ in range(5):
            state_f = fatigue(None, 1.0, [1.504])
            state_f = fatigue(None, 1.0)  # a window with no answer adds none
    state_f = fatigue(None, 1.0, [0.512, 0.48])
    assert state_f.z["latency"] == expected_z([1.504] * 10 + [0.512, 0.48])


def test_no_break_at_an_index_under_break_on_even_with_no_hold_time():
    """``break_min_s = 0`` (a valid setting) means "at once", not "always": an index under
    ``break_on`` never suggests a break (it flapped on and off every second)."""
    from edge.campaign import FatigueConfig
    from edge.fatigue import Fatigue, FatigueBaseline

    fatigue = Fatigue(FatigueConfig(break_min_s=0.0), FatigueBaseline({"latency": 0.5},
                                                                      {"latency": 0.1}, 100))
    states = [fatigue(None, 1.0) for _ in range(10)]
    assert all(s.index is not None and s.index < 60.0 and not s.break_suggested for s in states)


def test_private_mode_and_a_stop_withdraw_the_break_suggestion():
    """A break suggested, then the agent goes private: the suggestion's cue_off comes just before
    private_on, as every open cue's does (it stayed open on the dashboard, and a stop while private
    did not close it either); it comes back after private mode if it still holds."""
    from edge.campaign import from_mapping
    from edge.pipeline import Pipeline, load_vad_model
    from tests._fixtures_signals import AGENT, clips

    campaign = from_mapping({"fatigue": {"baseline_speech_s": 30.0, "dose_full_min": 1.0,
                                         "drift_zero": 0.0, "drift_full": 0.5, "break_on": 10.0,
                                         "break_off": 5.0, "break_min_s": 0.0}})
    speech = np.concatenate([np.pad(c, (0, 4000)) for c in clips(AGENT, "N")])
    n = 75 * 16000
    audio = np.zeros((2, n), dtype=np.float32)
    audio[0] = np.resize(speech, n)
    audio += np.random.default_rng(1).normal(0, 3e-4, (2, n)).astype(np.float32)
    pipe = Pipeline(load_vad_model(), campaign=campaign)
    msgs = []
    for i in range(0, n, 16000):
        msgs += pipe(audio[:, i:i + 16000])
    msgs += pipe.set_private(True)
    msgs += pipe(np.zeros((2, 5 * 16000), dtype=np.float32))
    stopped_private = msgs + pipe.stop()
    pipe.set_private(False)
    for i in range(0, 10 * 16000, 16000):
        msgs += pipe(audio[:, i:i + 16000])
    msgs += pipe.stop()

    def seen(messages: list) -> list:
        return [(e.body["name"], e.body.get("cue")) for e in messages if e.kind == "event"
                and (e.body.get("cue") == "take_break" or e.body["name"].startswith("private"))]

    on, off, private = ("cue_on", "take_break"), ("cue_off", "take_break"), ("private_on", None)
    assert seen(stopped_private) == [on, off, private]
    assert seen(msgs) == [on, off, private, on, off]  # back after private mode, ended at the stop


def test_the_index_reads_seconds_of_speech_whatever_the_window_length():
    """The same voice with the same drift (+0.3 semitone, -1 dB, over a slowly wandering 10 s
    prosody window) gives the same index whether the box's windows last 0.5, 1, 2 or 5 s: the
    stage counted ten windows as one independent observation (index 75 at 0.5 s, 14 at 5 s), and
    with track_speech_s = 30 and 2 s windows never computed a drift at all."""
    from edge.campaign import FatigueConfig
    from edge.fatigue import Fatigue
    from edge.prosody import ProsodyWindow

    def wander(seconds: float, rng: np.random.Generator) -> np.ndarray:
        n = int(seconds / 0.5)  # every 0.5 s, smoothed over 10 s like the prosody window
        return np.convolve(rng.normal(0, 1, n + 20), np.ones(20) / 20, mode="valid")[:n]

    def window(pitch_st: float, level_db: float) -> ProsodyWindow:
        return ProsodyWindow(
            start_s=0, end_s=10, voiced_ratio=0.6, level_dbfs=-25.0 + level_db,
            f0_median_hz=100 * 2 ** ((12 + pitch_st) / 12), pitch_range_st=6.0,
            pitch_movement_st_per_s=None, hnr_db=12.0, jitter_local=0.01, shimmer_local=0.05,
            syllables=20, articulation_rate_syl_s=5.0, pace_syl_s=5.0, speaking_rate_syl_s=4.0,
            pauses=2, pauses_per_min=10, breaths=0, pause_s_mean=0.4)

    def index(window_s: float, config: FatigueConfig, seed: int) -> float:
        rng = np.random.default_rng(seed)
        pitch = np.concatenate([3.0 * wander(300, rng), 3.0 * wander(600, rng) + 0.3])
        level = np.concatenate([5.0 * wander(300, rng), 5.0 * wander(600, rng) - 1.0])
        stage = Fatigue(config)
        every = int(window_s / 0.5)
        for p, lv in zip(pitch[::every], level[::every], strict=True):
            state = stage(window(float(p), float(lv)), window_s)
        return float(state.index or 0.0)

    config = FatigueConfig(dose_full_min=1440.0)  # the vocal dose out of the picture
    means = {w: np.mean([index(w, config, seed) for seed in range(12)]) for w in (0.5, 1.0, 2.0, 5.0)}
    print(f"mean index by window length: {means}")
    assert max(means.values()) - min(means.values()) <= 5.0 and min(means.values()) >= 30.0
    assert index(2.0, FatigueConfig(track_speech_s=30.0, dose_full_min=1440.0), 0) > 0.0


def _voice(pitch_st: float = 0.0, level_db: float = 0.0, voiced: float = 0.6):
    """One prosody window of the agent: pitch (semitones) and level (dB) off a fixed voice."""
    from edge.prosody import ProsodyWindow

    return ProsodyWindow(
        start_s=0, end_s=10, voiced_ratio=voiced, level_dbfs=-25.0 + level_db,
        f0_median_hz=100 * 2 ** ((12 + pitch_st) / 12), pitch_range_st=6.0,
        pitch_movement_st_per_s=None, hnr_db=12.0, jitter_local=0.01, shimmer_local=0.05,
        syllables=20, articulation_rate_syl_s=5.0, pace_syl_s=5.0, speaking_rate_syl_s=4.0,
        pauses=2, pauses_per_min=10, breaths=0, pause_s_mean=0.4)


def _wander(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A slowly wandering unit-spread series, one value a second (the 10 s prosody window)."""
    n = int(seconds)
    return np.convolve(rng.normal(0, 1, n + 10), np.ones(10) / 10 ** 0.5, mode="valid")[:n]


def test_a_voice_drifting_away_from_fatigue_is_not_fatigue():
    """Over the shift the agent's voice gets lower and louder (rested, not worn out): the index
    stays 0; the same drift the other way raises it. Only drift towards fatigue counts."""
    from edge.campaign import FatigueConfig
    from edge.fatigue import Fatigue

    def index(sign: float) -> float:
        rng = np.random.default_rng(4)
        stage = Fatigue(FatigueConfig(dose_full_min=1440.0))  # the vocal dose out of the picture
        pitch = np.concatenate([_wander(300, rng), _wander(600, rng) + sign * 1.0])
        level = np.concatenate([2.0 * _wander(300, rng), 2.0 * _wander(600, rng) - sign * 3.0])
        for p, lv in zip(pitch, level, strict=True):
            state = stage(_voice(float(p), float(lv)), 1.0)
        assert state.index is not None
        return state.index

    rested, tired = index(-1.0), index(+1.0)
    print(f"index rested {rested:.1f}, tired {tired:.1f}")
    assert rested == 0.0 and tired >= 50.0


def test_a_steady_voice_reads_as_measurement_noise():
    """24 steady shifts (no drift, the voice wandering as real prosody windows do): the
    baseline is itself an estimate, and the drift's standard error counts it, so the mean index
    stays low: 4.7 (a standard error that left out the baseline's own read 10.9)."""
    from edge.campaign import FatigueConfig
    from edge.fatigue import Fatigue

    def index(seed: int) -> float:
        rng = np.random.default_rng(seed)
        stage = Fatigue(FatigueConfig(dose_full_min=1440.0))
        for p, lv in zip(_wander(900, rng), 2.0 * _wander(900, rng), strict=True):
            state = stage(_voice(float(p), float(lv)), 1.0)
        return float(state.index or 0.0)

    indices = [index(seed) for seed in range(24)]
    print(f"steady shifts: {np.round(indices, 1).tolist()}")
    assert np.mean(indices) < 7.5


def test_the_vocal_dose_counts_seconds_of_voice_whatever_the_window_length():
    """Ten minutes of the same voice (60 % voiced) read as 6 phonation minutes with 0.5, 1 or 2 s
    windows (half-second windows counted each window as a second: 12 minutes)."""
    from edge.fatigue import Fatigue

    for window_s in (0.5, 1.0, 2.0):
        stage = Fatigue()
        for _ in range(int(600 / window_s)):
            state = stage(_voice(), window_s)
        assert abs(state.phonation_min - 6.0) < 1e-6, (window_s, state.phonation_min)


def test_a_break_waits_its_hold_time_and_is_withdrawn_only_under_break_off():
    """The index (here driven by the agent's answer latency against a learned 0.5 s baseline) at
    67 for 100 s suggests nothing (break_min_s is 120 s); after a dip to 46 the hold time starts
    over; 120 s at 67 then suggest a break, which stays at 46 (over break_off, 40) and is
    withdrawn at 26."""
    from edge.fatigue import Fatigue, FatigueBaseline

    stage = Fatigue(baseline=FatigueBaseline({"latency": 0.5}, {"latency": 0.1}, 100))

    def run(latency_s: float, seconds: int) -> list[tuple[float, bool]]:
        out = []
        for k in range(seconds):  # twenty answers of that latency, then one a second
            state = stage(None, 1.0, [latency_s] * (20 if k == 0 else 1))
            assert state.index is not None
            out.append((round(state.index), state.break_suggested))
        return out

    first = run(0.9, 100)
    assert {i for i, _ in first} == {67} and not any(b for _, b in first)
    assert not any(b for _, b in run(0.8, 30))  # index 46: under break_on
    again = run(0.9, 130)
    assert [b for _, b in again].index(True) == 119  # 120 s at 67 from the dip, not 100 + 20
    held = run(0.8, 30)
    assert {i for i, _ in held} == {46} and all(b for _, b in held)
    assert not any(b for _, b in run(0.7, 5))


def test_one_slow_answer_is_not_a_drift():
    """After the latency baseline, four answers of 3 s (the agent looking something up) do not
    move the index: the latency drift needs five answers, then reads them."""
    from edge.fatigue import Fatigue, FatigueBaseline

    stage = Fatigue(baseline=FatigueBaseline({"latency": 0.5}, {"latency": 0.1}, 100))
    for _ in range(4):
        state = stage(None, 1.0, [3.0])
        assert "latency" not in state.z and state.index == 0.0
    state = stage(None, 1.0, [3.0])
    assert state.z["latency"] > 8.0 and state.index == 100.0


def test_a_channel_level_step_is_not_fatigue():
    """A steady 24-minute shift whose headset changes at minute 10: the gain knob turned 6 dB down
    (voice and noise floor), or the microphone moved away from the mouth (the voice 8 dB quieter and
    duller, the room as loud). Neither is the voice tiring: no break (the level drift read 25 and 33
    standard errors, index 100 and a break 4 minutes after the change)."""
    from tests._fixtures_fatigue import build_shift, channel_change, run_shift

    steady = build_shift(False, seed=11, minutes=24)
    for name, shift in (("gain", channel_change(steady, 10.0, -6.0)),
                        ("mic away", channel_change(steady, 10.0, 0.0, mic_away_db=-8.0))):
        index, _, msgs = run_shift(shift)
        print(f"{name}: index per minute {np.round(index).tolist()}")
        assert not any(e.get("name") == "cue_on" and e.get("cue") == "take_break" for e in msgs), name
        assert np.nanmax(index) < 20.0, name
        assert all(abs(m["fatigue_level_z"]) < 3.0 for m in msgs if "fatigue_level_z" in m), name


def test_a_noisier_room_is_not_a_breathier_voice():
    """A steady 24-minute shift; from minute 8 the room is noisy (the shared dishes noise 15 dB
    under the voice). The harmonics-to-noise ratio, jitter and shimmer read the noise: they count
    only windows heard about as far over the noise floor as the baseline was. No break (HNR drift
    read 9.5 standard errors, index 87 and a break)."""
    from tests._fixtures_fatigue import build_shift, noisier, run_shift

    index, _, msgs = run_shift(noisier(build_shift(False, seed=11, minutes=24), 8.0, 15.0))
    print(f"noisy room: index per minute {np.round(index).tolist()}")
    assert not any(e.get("name") == "cue_on" and e.get("cue") == "take_break" for e in msgs)
    assert np.nanmax(index) < 20.0
    assert all(m.get("fatigue_hnr_z", 0.0) < 3.0 for m in msgs)


def _run(audio: np.ndarray, baseline=None) -> tuple:
    """The pipeline over the agent's channel (a silent line), from ``baseline`` if given: the
    pipeline and its messages' bodies."""
    from edge.pipeline import Pipeline, load_vad_model

    stereo = np.zeros((2, len(audio)), dtype=np.float32)
    stereo[0] = audio
    pipe = Pipeline(load_vad_model(), fatigue_baseline=baseline)
    return pipe, [m.body for i in range(0, len(audio), 160000) for m in pipe(stereo[:, i:i + 160000])]


@pytest.fixture(scope="module")
def saved_baseline() -> dict:
    """The fatigue baseline a 10-minute steady shift of speaker 03 saves for the next one (run
    once for the tests that load it: each takes its own copy)."""
    from tests._fixtures_fatigue import build_shift

    saved = _run(build_shift(False, seed=11, minutes=10).audio)[0].learned_baselines()[1]
    assert saved is not None
    return saved


def test_a_baseline_from_the_previous_shift_follows_another_headset(saved_baseline: dict):
    """The agent's baseline is learned on a 10-minute shift, saved, and loaded for the next shift,
    heard through a headset 6 dB quieter: the first minute's level is the channel's, not the voice
    tiring overnight. No break (index 100 from the second minute, a break at 2.5 minutes)."""
    from edge.fatigue import FatigueBaseline
    from tests._fixtures_fatigue import build_shift

    _, msgs = _run(build_shift(False, seed=12, minutes=12).audio * 10 ** (-6 / 20),
                   FatigueBaseline.from_dict(copy.deepcopy(saved_baseline)))
    index = [m["fatigue_index"] for m in msgs if "fatigue_index" in m]
    print(f"index every minute on the other headset: {index[::60]}")
    assert not any(m.get("name") == "cue_on" and m.get("cue") == "take_break" for m in msgs)
    assert max(index) < 30.0


def test_a_baseline_saved_by_the_release_before_learns_the_noise_floor(saved_baseline: dict):
    """A baseline saved before the voice's level over the noise floor was kept (no ``snr``) is
    loaded; from minute 8 the room is noisy (the dishes 15 dB under the voice): the shift's own
    first minutes give the reference, and the noise is not read as a breathier voice (HNR drift
    9.6 standard errors, index 88 and a break at 18 minutes)."""
    from edge.fatigue import FatigueBaseline
    from tests._fixtures_fatigue import build_shift, noisier

    saved = copy.deepcopy(saved_baseline)
    older = {"mean": {k: v for k, v in saved["mean"].items() if k != "snr"},
             "sd": {k: v for k, v in saved["sd"].items() if k != "snr"}, "n": saved["n"]}
    _, msgs = _run(noisier(build_shift(False, seed=12, minutes=24), 8.0, 15.0).audio,
                   FatigueBaseline.from_dict(older))
    index = [m["fatigue_index"] for m in msgs if "fatigue_index" in m]
    print(f"index every minute: {np.round(index[::60]).tolist()}")
    assert not any(m.get("name") == "cue_on" and m.get("cue") == "take_break" for m in msgs)
    assert max(index) < 20.0 and all(m.get("fatigue_hnr_z", 0.0) < 3.0 for m in msgs)


def test_the_break_suggestion_stays_through_a_hold_and_a_mute():
    """A break suggested, then the call is put on hold (the agent talks to a colleague) and the
    headset is muted: the posture cues are held back then, the break suggestion is not (a hold or
    a mute is a time to read it, and withdrawing it at each would bring it back after each: one
    cue_on, no cue_off, break_suggested in every window; docs/cues.md)."""
    from edge.campaign import from_mapping
    from edge.pipeline import Pipeline, load_vad_model
    from tests._fixtures_signals import AGENT, clips

    campaign = from_mapping({"fatigue": {"baseline_speech_s": 30.0, "dose_full_min": 1.0,
                                         "drift_zero": 0.0, "drift_full": 0.5, "break_on": 10.0,
                                         "break_off": 5.0, "break_min_s": 0.0}})
    speech = np.concatenate([np.pad(c, (0, 4000)) for c in clips(AGENT, "N")])
    n = 100 * 16000
    audio = np.zeros((2, n), dtype=np.float32)
    audio[0] = np.resize(speech, n)
    audio += np.random.default_rng(1).normal(0, 3e-4, (2, n)).astype(np.float32)
    audio[0, 90 * 16000:] = 0.0  # the headset muted: digital silence
    pipe = Pipeline(load_vad_model(), campaign=campaign)
    msgs, why = [], []
    for i in range(0, n, 16000):
        if i == 75 * 16000:
            pipe.call_state("hold")
        if i == 85 * 16000:
            pipe.call_state("active")
        msgs += pipe(audio[:, i:i + 16000])
        why.append(pipe.signals._why)  # why the posture cues are held back, if they are
    events = [m.body for m in msgs if m.kind == "event" and m.body.get("cue") == "take_break"]
    assert [e["name"] for e in events] == ["cue_on"] and events[0]["t_audio_s"] < 75.0, events
    late = [m.body for m in msgs if m.kind == "metrics" and m.body["t_start"] >= 75.0]
    assert len(late) >= 24 and all(m["break_suggested"] for m in late)
    assert set(why[76:85]) == {"hold"} and why[-1] == "muted", why

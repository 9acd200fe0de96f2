"""Silero VAD on both runtimes: the converted TFLite file (LiteRT, the box's default) gives the
published ONNX file's probabilities on real speech."""

import numpy as np
import pytest

from bench.vad import ami_auc, batched, headset_pair, per_channel, shipped
from edge.pipeline import VAD_MODELS, load_vad_model
from edge.settings import EdgeSettings
from models.build import manifest, model_path


@pytest.fixture(scope="module")
def models():
    return load_vad_model("litert"), load_vad_model("onnx")


def test_litert_probabilities_match_onnx_runtime_on_two_real_talkers(models):
    litert, onnx = models
    audio = headset_pair(seconds=30.0)
    ours, theirs = batched(litert, audio), batched(onnx, audio)
    assert ours.shape == theirs.shape == (2, 30 * 16000 // 512)
    assert theirs.max() > 0.9 and theirs.min() < 0.1  # real speech and real silence
    diff = float(np.abs(ours - theirs).max())
    print(f"largest difference over {ours.size} probabilities: {diff:.2e}")
    assert diff < 1e-4
    # one channel per call (another batch size) resizes the model and gives the same answer
    assert np.abs(per_channel(litert, audio[:, :16000 * 5]) - theirs[:, :156]).max() < 1e-4


def test_shipped_path_auc_on_ami_within_0005_of_the_reference(models):
    litert, onnx = models
    auc, reference = ami_auc(litert, shipped), ami_auc(onnx, per_channel)
    print(f"AMI frame ROC-AUC: shipped {auc:.4f}, reference {reference:.4f}")
    assert reference > 0.95
    assert abs(auc - reference) <= 0.005


def test_the_box_runs_litert_by_default_and_both_files_verify():
    assert EdgeSettings(site="s", box="b").model_backend == "litert"
    entries = manifest()
    for backend, name in VAD_MODELS.items():
        assert model_path(name).exists(), backend  # raises on a checksum mismatch
    assert entries["silero_vad_tflite"]["source"]["derived_from"] == "silero_vad"
    with pytest.raises(ValueError, match="litert or onnx"):
        load_vad_model("tflite")


def test_both_backends_give_the_same_call(models):
    """The whole pipeline on one minute of two real talkers: same segments, turns and metrics."""
    from edge.pipeline import analyze

    litert, onnx = models
    audio = headset_pair(seconds=60.0)
    ours, theirs = analyze(audio, litert), analyze(audio, onnx)
    assert len(theirs["vad"]["near"]["segments"]) > 5 and len(theirs["vad"]["far"]["segments"]) > 5
    assert ours["vad"]["near"]["segments"] == theirs["vad"]["near"]["segments"]
    assert ours["vad"]["far"]["segments"] == theirs["vad"]["far"]["segments"]
    assert ours["metrics"] == theirs["metrics"]


def test_a_gated_channel_keeps_its_state_while_the_other_runs(models):
    """The pre-gate holds a quiet channel (state and probability) while the loud one goes on in the
    same batch: the loud channel reads as it would alone, the quiet one resumes where it was."""
    from edge.frames import FRAME_SAMPLES, RATE_HZ, Frame
    from edge.pipeline import VAD_GATE_DBFS, VAD_GATE_MAX_PROB
    from edge.vad import SileroVad

    litert, _ = models
    talk = headset_pair(seconds=6.0)[0]
    quiet = np.random.default_rng(3).normal(0.0, 10 ** (-70 / 20), talk.shape).astype(np.float32)
    both = SileroVad(litert, gate_dbfs=VAD_GATE_DBFS, gate_max_prob=VAD_GATE_MAX_PROB)
    alone = SileroVad(litert, channels=1)
    held = []
    for k in range(len(talk) // FRAME_SAMPLES):
        part = slice(k * FRAME_SAMPLES, (k + 1) * FRAME_SAMPLES)
        prob = both(Frame(np.stack([talk[part], quiet[part]]), RATE_HZ, k * 0.032, k))
        assert abs(prob[0] - alone(Frame(talk[None, part], RATE_HZ, k * 0.032, k))[0]) < 1e-4
        held.append(float(prob[1]))
    assert both.gated > 150 and len(set(held[-150:])) == 1 and held[-1] < VAD_GATE_MAX_PROB


def test_a_noisy_channel_is_held_near_its_own_floor(models):
    """A line with a -45 dBFS noise floor, far over the fixed gate's -60 dBFS: held through its
    silence once the model has heard clear silence, as a quiet line is; without the floor hold,
    never. Speech 20 dB over the floor is never held, and is heard."""
    from bench.accuracy_conversation import EMODB, read_wav
    from edge.frames import FRAME_SAMPLES, RATE_HZ, Frame
    from edge.pipeline import VAD_GATE_ABOVE_FLOOR_DB, VAD_GATE_DBFS, VAD_GATE_MAX_PROB
    from edge.vad import SileroVad

    litert, _ = models
    talk = read_wav(EMODB / "wav" / "03a01Fa.wav")  # 2 s of speech, about 20 dB over the noise
    x = np.random.default_rng(5).normal(0.0, 10 ** (-45 / 20), 10 * RATE_HZ).astype(np.float32)
    x[8 * RATE_HZ:8 * RATE_HZ + len(talk)] += talk
    speech_from = 8 * RATE_HZ // FRAME_SAMPLES
    for floor_db, want_held in ((VAD_GATE_ABOVE_FLOOR_DB, True), (None, False)):
        vad = SileroVad(litert, channels=1, gate_dbfs=VAD_GATE_DBFS, gate_max_prob=VAD_GATE_MAX_PROB,
                        gate_above_floor_db=floor_db)
        probs, held = [], []
        for k in range(len(x) // FRAME_SAMPLES):
            before = vad.gated
            probs.append(float(vad(Frame(x[None, k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES], RATE_HZ,
                                         k * 0.032, k))[0]))
            held.append(vad.gated > before)
        noise_held = sum(held[:speech_from])
        assert (noise_held > 0.8 * speech_from) is want_held, (floor_db, noise_held, speech_from)
        assert sum(held[speech_from + 3:speech_from + 50]) == 0  # the speech itself, past its onset
        assert max(probs[speech_from:]) > 0.9


def _onset_lags(model, gap_s: float, gate: bool, clips: list[str]) -> np.ndarray:
    """Each clip after ``gap_s`` of a -65 dBFS floor, raw on the near channel and band-limited (the
    line) on the far: the speech gate's start minus the labelled onset, seconds, per clip and
    channel (1 s when the gate never starts)."""
    from bench.accuracy_conversation import EMODB, _line_filter, read_wav, speech_span
    from edge.frames import FRAME_SAMPLES, RATE_HZ
    from edge.vad import SpeechGate

    step = 2.0 + gap_s
    n = int((len(clips) * step + gap_s) * RATE_HZ)
    audio = np.zeros((2, n), dtype=np.float32)
    starts = []
    for k, name in enumerate(clips):
        i = int((gap_s + k * step) * RATE_HZ)
        x = read_wav(EMODB / "wav" / f"{name}.wav")[:int(2.0 * RATE_HZ)]
        audio[:, i:i + len(x)] = x
        starts.append(i / RATE_HZ)
    audio += np.random.default_rng(7).normal(0.0, 10 ** (-65 / 20), audio.shape).astype(np.float32)
    audio[1] = _line_filter(audio[1])
    prob = (shipped if gate else batched)(model, audio)
    gates = [SpeechGate(), SpeechGate()]
    onsets: list[list[float]] = [[], []]
    for k in range(prob.shape[1]):
        t = k * FRAME_SAMPLES / RATE_HZ
        for c in (0, 1):
            if gates[c](float(prob[c, k]), t) == "start":
                onsets[c].append(gates[c].transition_s)
    lags = np.ones((len(clips), 2))
    for k, (name, t0) in enumerate(zip(clips, starts, strict=True)):
        onset = t0 + speech_span(name)[0]
        for c in (0, 1):
            near = [t for t in onsets[c] if t0 - 0.3 <= t < t0 + 2.0]
            if near:
                lags[k, c] = near[0] - onset
    return lags


def test_the_pre_gate_hears_an_onset_after_a_long_silence_as_after_a_short_one(models):
    """Silero's recurrent state drifts through a long silence: the longer a channel has been quiet,
    the later it hears the next onset. The pipeline's pre-gate holds the state on a quiet line, so
    the onset comes as it would after a second. EmoDB utterances no conversation test call uses."""
    from bench.accuracy_conversation import EMODB, clean_clips, speech_span

    used = {n for names in clean_clips().values() for n in names}
    clips = [w.stem for w in sorted((EMODB / "wav").glob("*.wav"))
             if w.stem not in used and speech_span(w.stem) is not None][::8]
    litert, _ = models
    short = _onset_lags(litert, 1.0, False, clips)
    drift = _onset_lags(litert, 5.0, False, clips)
    gated = _onset_lags(litert, 5.0, True, clips)
    print(f"{len(clips)} utterances, mean onset lag near/far: after 1 s {short.mean(0)}, "
          f"after 5 s {drift.mean(0)}, after 5 s gated {gated.mean(0)}; late by 150 ms or more: "
          f"{(short >= 0.15).sum()}, {(drift >= 0.15).sum()}, {(gated >= 0.15).sum()}")
    assert len(clips) >= 30
    assert (drift.mean(0) > short.mean(0) + 0.02).all()  # the drift
    assert (gated.mean(0) < short.mean(0) + 0.01).all()

"""Synthetic shifts for the fatigue tests: one EmoDB speaker's real speech, freshly shuffled per pass.

A shift is 60 minutes of one speaker's clips (mixed emotions), every pass through the clips in a new
random order; with drift, minute ``k`` is pitch-shifted by ``k / 60`` semitone and attenuated by
``2 k / 60`` dB with sox (``pitch`` keeps the tempo). A quiet real noise floor (pink noise at
about -62 dBFS) is added after the drift, as a headset microphone always picks up some. Built once
per test session.
"""

from __future__ import annotations

import random
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RATE_HZ = 16_000
SPEAKER = "03"
SHIFT_MIN = 60
PITCH_ST = 1.0
LEVEL_DB = -2.0


def read_wav(path: Path) -> np.ndarray:
    """Mono 16 kHz PCM16 WAV as float32."""
    with wave.open(str(path)) as wf:
        assert wf.getframerate() == RATE_HZ and wf.getnchannels() == 1
        return np.frombuffer(wf.readframes(wf.getnframes()), np.int16).astype(np.float32) / 32768.0


def sox(x: np.ndarray, *effects: str) -> np.ndarray:
    """Run float32 mono samples through sox effects (same rate and length class)."""
    raw = ["-t", "raw", "-r", str(RATE_HZ), "-e", "floating-point", "-b", "32", "-c", "1"]
    proc = subprocess.run(["sox", *raw, "-", *raw, "-", *effects], input=x.astype(np.float32).tobytes(),
                          capture_output=True, check=True)
    return np.frombuffer(proc.stdout, np.float32).copy()


def noise_floor(n: int, dbfs: float = -62.0, seed: int = 0) -> np.ndarray:
    """A real pink-noise recording, looped to ``n`` samples, scaled to ``dbfs`` RMS."""
    x = read_wav(SHARED / "noise" / "pink_noise.wav")
    start = random.Random(seed).randrange(len(x) // 2)
    y = np.resize(np.roll(x, -start), n)
    return (y / (np.sqrt(np.mean(y ** 2)) + 1e-12) * 10 ** (dbfs / 20)).astype(np.float32)


def shuffled_speech(speaker: str, seconds: float, seed: int) -> np.ndarray:
    """The speaker's clips, each pass in a fresh random order, until ``seconds`` of audio."""
    clips = [read_wav(p) for p in sorted((SHARED / "emodb" / "wav").glob(f"{speaker}*.wav"))]
    rng = random.Random(seed)
    out: list[np.ndarray] = []
    n = 0
    while n < seconds * RATE_HZ:
        order = list(range(len(clips)))
        rng.shuffle(order)
        for i in order:
            out.append(clips[i])
            n += len(clips[i])
    return np.concatenate(out)[: int(seconds * RATE_HZ)]


def drifted(x: np.ndarray, minutes: int, pitch_st: float, level_db: float) -> tuple[np.ndarray, np.ndarray]:
    """Apply a linear pitch and level drift per one-minute chunk; return audio and per-minute drift 0..1."""
    chunk = len(x) // minutes
    parts, frac = [], []
    for k in range(minutes):
        f = k / (minutes - 1)
        seg = x[k * chunk:(k + 1) * chunk]
        parts.append(sox(seg, "pitch", f"{100 * pitch_st * f:.2f}", "vol", f"{level_db * f:.3f}dB")
                     [: len(seg)])
        frac.append(f)
    y = np.concatenate(parts)
    return y, np.asarray(frac)


@dataclass
class Shift:
    """A synthetic shift: near-channel audio and the drift applied to each minute (0..1)."""

    audio: np.ndarray
    drift: np.ndarray


def build_shift(drift: bool, seed: int, minutes: int = SHIFT_MIN) -> Shift:
    """Build one shift (see the module docstring)."""
    x = shuffled_speech(SPEAKER, minutes * 60.0, seed)
    if drift:
        y, frac = drifted(x, minutes, PITCH_ST, LEVEL_DB)
    else:
        y, frac = x, np.zeros(minutes)
    y = y + noise_floor(len(y), seed=seed)
    return Shift(y.astype(np.float32), frac)


def channel_change(shift: Shift, at_min: float, gain_db: float, mic_away_db: float = 0.0) -> Shift:
    """The same shift with the headset's channel changed from ``at_min`` on: its gain (voice and
    noise floor) by ``gain_db``, or the microphone moved away from the mouth (the voice, not the
    room's floor, ``mic_away_db`` quieter and duller: a 3 kHz low-pass)."""
    floor = noise_floor(len(shift.audio), seed=11)
    voice = shift.audio - floor  # as built by build_shift(seed=11)
    at = int(at_min * 60 * RATE_HZ)
    if mic_away_db:
        voice[at:] = sox(voice[at:], "lowpass", "3000", "vol", f"{mic_away_db}dB")[: len(voice) - at]
    y = voice + floor
    y[at:] *= 10 ** (gain_db / 20)
    return Shift(y.astype(np.float32), shift.drift)


def noisier(shift: Shift, at_min: float, snr_db: float, name: str = "doing_the_dishes.wav") -> Shift:
    """The same shift with a real noise (``../shared/data/noise``) from ``at_min`` on, ``snr_db``
    under the voice (its RMS over the frames within 30 dB of its loudest)."""
    x = shift.audio
    frames = x[: len(x) // 512 * 512].reshape(-1, 512)
    power = np.mean(frames ** 2, axis=1)
    voice_db = 10 * np.log10(np.mean(power[power > power.max() * 1e-3]))
    noise = np.resize(read_wav(SHARED / "noise" / name), len(x))
    noise *= 10 ** ((voice_db - snr_db) / 20) / np.sqrt(np.mean(noise ** 2))
    noise[: int(at_min * 60 * RATE_HZ)] = 0.0
    return Shift((x + noise).astype(np.float32), shift.drift)


ShiftResult = tuple[np.ndarray, np.ndarray, list[dict]]


def run_shift(shift: Shift) -> ShiftResult:
    """Run the whole pipeline (agent on near, a silent line); return per-minute index, drift, msgs."""
    from edge.pipeline import Pipeline, load_vad_model
    from miroir import wire

    audio = np.zeros((2, len(shift.audio)), dtype=np.float32)
    audio[0] = shift.audio
    pipe = Pipeline(load_vad_model())
    metrics: list[dict] = []
    events: list[dict] = []
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
    for body in metrics[-5:]:
        wire.validate("metrics", {**header, **body})
    return index, shift.drift, metrics + events


def build_and_run(drift: bool) -> ShiftResult:
    """One shift, built and run in this process (a worker of :func:`shift_results`)."""
    return run_shift(build_shift(drift, seed=11))  # the same shuffled shift, with or without drift


@pytest.fixture(scope="session")
def shift_results() -> dict[str, ShiftResult]:
    """Both 60-minute shifts (drifting: +1 semitone and -2 dB; steady: the same shuffled shift, no
    drift), each run through the whole pipeline in its own process, side by side on two cores."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        drift, steady = pool.map(build_and_run, (True, False))
    return {"drift": drift, "steady": steady}

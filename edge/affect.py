"""Prospect affect (arousal, tension) on the far channel only, from ~2 s windows of prospect speech.

The EU AI Act (Art. 5(1)(f)) forbids inferring the emotions of employees at work: this stage never
sees the agent's channel as model input. It runs a window through the model only when

* it is enabled (:attr:`AffectConfig.enabled`, off by default: the box's ``affect_enabled``
  setting, or ``miroir analyze --affect``) and the campaign discloses it (``[affect] disclosed``:
  the call script tells the prospect about emotion recognition, EU AI Act Art. 50(3); without it
  :class:`edge.pipeline.Pipeline` drops the stage);
* the far channel (the prospect) spoke for at least ``min_far_speech_s`` of the window;
* the near channel (the agent) did not speak in the window at all;
* the far channel does not follow the near channel (headset sidetone and line echo put the agent's
  voice on the far channel: when the far energy envelope correlates with the near one and the near
  channel is about as loud as the far one or louder, the window is skipped).

The near channel is read only for those two gating decisions (energy envelope and VAD state), never
as features. Features (:func:`window_features`) are gain-invariant log-mel functionals up to 4 kHz
(telephone band) and the prosody stage's functionals; the model (``models/affect``, int8 ONNX or
TFLite) turns them into two probabilities. ``miroir analyze --affect`` shows what it evaluated
(:func:`analysis_section`).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.frames import RATE_HZ  # also the rate of the training clips
from edge.runtime import Model, load_model

log = logging.getLogger(__name__)

WINDOW_S = 2.0
"""Length of an affect window, seconds (the training clips are exactly 2.0 s)."""
WINDOW_SAMPLES = int(WINDOW_S * RATE_HZ)
"""Samples in an affect window (:data:`WINDOW_S` at :data:`RATE_HZ`: 32,000)."""
HOP_S = 1.0
"""Nominal hop between windows, seconds (rounded to whole 32 ms frames by the stage)."""

N_FFT = 512
WIN_SAMPLES = 400
"""25 ms analysis window."""
STEP_SAMPLES = 160
"""10 ms step between log-mel frames."""
N_MELS = 24
FMIN_HZ = 60.0
"""Lower edge of the mel bank: the lowest pitch the prosody stage tracks (``edge.prosody.F0_MIN_HZ``)."""
FMAX_HZ = 4000.0
"""Upper edge of the mel bank: the telephone band, so 8 kHz line audio is not out of distribution."""
ACTIVE_RANGE_DB = 35.0
"""Log-mel frames within this many dB of the window's loudest frame are 'active' (speech)."""

PROSODY_KEYS = ("voiced_ratio", "f0_median_hz", "pitch_range_st", "pitch_movement_st_per_s", "hnr_db",
                "jitter_local", "shimmer_local", "syllables", "articulation_rate_syl_s",
                "speaking_rate_syl_s", "pauses", "pauses_per_min", "breaths", "pause_s_mean")
"""Prosody functionals used as features (the absolute level is left out: line gain varies)."""

FEATURE_NAMES: tuple[str, ...] = (
    *(f"mel_shape_mean_{i}" for i in range(N_MELS)),
    *(f"mel_shape_std_{i}" for i in range(N_MELS)),
    *(f"mel_std_{i}" for i in range(N_MELS)),
    *(f"mel_delta_{i}" for i in range(N_MELS)),
    "slope_mean", "slope_std", "slope_p90", "slope_p10",
    "energy_range_db", "energy_std_db", "active_ratio", "energy_delta_db", "energy_median_below_p90_db",
    *(f"prosody_{k}" for k in PROSODY_KEYS),
)
FEATURES_VERSION = 1


def _mel_bank() -> np.ndarray:
    """Triangular mel filters, shape (N_MELS, N_FFT // 2 + 1)."""
    def hz2mel(f: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel2hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    pts = mel2hz(np.linspace(hz2mel(FMIN_HZ), hz2mel(FMAX_HZ), N_MELS + 2))
    bins = np.fft.rfftfreq(N_FFT, 1.0 / RATE_HZ)
    bank = np.zeros((N_MELS, len(bins)))
    for i in range(N_MELS):
        lo, mid, hi = pts[i:i + 3]
        bank[i] = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0.0, None)
    return bank.astype(np.float32)


_BANK = _mel_bank()
_HANN = np.hanning(WIN_SAMPLES + 1)[:-1].astype(np.float32)
_BAND_IDX = np.arange(N_MELS, dtype=np.float64) - (N_MELS - 1) / 2.0


def log_mel(samples: np.ndarray) -> np.ndarray:
    """Log-mel power spectrogram.

    Args:
        samples: mono float32 samples at 16 kHz (at least 400).

    Returns:
        dB values, shape (N_MELS, frames), one frame every 10 ms.
    """
    x = np.asarray(samples, dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x, WIN_SAMPLES)[::STEP_SAMPLES] * _HANN
    power = np.abs(np.fft.rfft(frames, N_FFT, axis=1)) ** 2
    return (10.0 * np.log10(_BANK @ power.T.astype(np.float32) + 1e-10)).astype(np.float64)


def _prosody(samples: np.ndarray) -> list[float]:
    """The prosody stage's functionals of one window, ``None`` replaced by 0."""
    from edge.prosody import Prosody

    pros = Prosody(history_s=len(samples) / RATE_HZ + 1.0, hum_check=False,
                   spectral_speed=False)  # as trained
    for i in range(0, len(samples), 512):
        pros(samples[i:i + 512])
    win = pros.window(len(samples) / RATE_HZ + 1.0, flush=True)
    out = []
    for key in PROSODY_KEYS:
        value = getattr(win, key)
        if key == "f0_median_hz":  # semitones re 100 Hz: a linear scale for a linear model
            value = 12.0 * np.log2(value / 100.0) if value else 0.0
        out.append(0.0 if value is None else float(value))
    return out


def window_features(samples: np.ndarray) -> np.ndarray:
    """Gain-invariant features of one window of one channel (what the affect model reads).

    Args:
        samples: mono float samples at 16 kHz, full scale +-1.0 (normally :data:`WINDOW_SAMPLES`).

    Returns:
        float32 vector of ``len(FEATURE_NAMES)`` values, all finite.
    """
    x = np.nan_to_num(np.asarray(samples, dtype=np.float32).reshape(-1))
    if len(x) < WIN_SAMPLES + STEP_SAMPLES:
        raise ValueError(f"a window needs at least {WIN_SAMPLES + STEP_SAMPLES} samples, got {len(x)}")
    lm = log_mel(x)
    energy = 10.0 * np.log10(np.sum(10.0 ** (lm / 10.0), axis=0) + 1e-10)
    active = energy > energy.max() - ACTIVE_RANGE_DB
    mel = lm[:, active]
    shape = mel - mel.mean(axis=0)
    slope = (_BAND_IDX @ shape) / float(_BAND_IDX @ _BAND_IDX)
    e = energy[active]
    delta = np.abs(np.diff(mel, axis=1)).mean(axis=1) if mel.shape[1] > 1 else np.zeros(N_MELS)
    feats = [
        *shape.mean(axis=1), *shape.std(axis=1), *mel.std(axis=1), *delta,
        slope.mean(), slope.std(), np.percentile(slope, 90), np.percentile(slope, 10),
        np.percentile(e, 90) - np.percentile(e, 10), e.std(), active.mean(),
        np.abs(np.diff(energy)).mean(), np.percentile(e, 50) - np.percentile(e, 90),
        *_prosody(x),
    ]
    return np.nan_to_num(np.asarray(feats, dtype=np.float32), posinf=0.0, neginf=0.0)


@dataclass(frozen=True)
class AffectConfig:
    """The affect stage's settings: off unless the box's settings (``affect_enabled``) or
    ``miroir analyze --affect`` enable it; the campaign's ``[affect] disclosed`` decides whether a
    pipeline runs it (:class:`edge.campaign.AffectDisclosure`)."""

    enabled: bool = False
    """Run the affect model on the prospect's channel (only for a campaign that discloses it)."""
    backend: str = "litert"
    """Model runtime: ``litert`` (int8 TFLite, as the box's default ``model_backend``) or ``onnx``
    (int8 QDQ ONNX on onnxruntime)."""
    hop_frames: int = 31
    """Frames (32 ms each) between window evaluations: 0.992 s."""
    min_far_speech_s: float = 0.75
    """The prospect must speak at least this long inside the window."""
    max_near_speech_s: float = 0.0
    """The agent may speak at most this long inside the window (0: not at all)."""
    echo_corr: float = 0.5
    """Skip when the far energy envelope correlates with the near one above this..."""
    echo_margin_db: float = 10.0
    """...and the near channel is no more than this many dB quieter than the far one."""


@dataclass
class AffectWindow:
    """The prospect's affect over one window."""

    start_s: float
    end_s: float
    arousal: float
    """Probability of high arousal, 0..1."""
    tension: float
    """Probability of tension (anger, fear, disgust), 0..1."""

    def as_dict(self) -> dict[str, float]:
        """JSON-ready dict, rounded."""
        return {"start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3),
                "arousal": round(self.arousal, 4), "tension": round(self.tension, 4)}


class AffectModel:
    """The checksum-verified affect model and its feature standardization, behind :func:`load_model`.

    Args:
        backend: ``onnx`` or ``litert``.
        model_file: override the model file (tests, benchmarks); default: from the manifest.
        spec_file: override ``affect_features.json``; default: from the manifest.
    """

    def __init__(self, backend: str = "litert", model_file: Path | None = None,
                 spec_file: Path | None = None) -> None:
        from models.build import model_path

        if backend not in ("onnx", "litert"):
            raise ValueError(f"affect backend {backend!r}: use onnx or litert")
        name = "affect_int8_onnx" if backend == "onnx" else "affect_int8_tflite"
        spec = json.loads((spec_file or model_path("affect_features")).read_text())
        if spec["features_version"] != FEATURES_VERSION:
            raise ValueError(f"affect model expects features v{spec['features_version']}, "
                             f"this box computes v{FEATURES_VERSION}: run `miroir models train affect`")
        index = {n: i for i, n in enumerate(FEATURE_NAMES)}
        self.columns = np.array([index[n] for n in spec["feature_names"]])
        self.mean = np.asarray(spec["mean"], dtype=np.float32)
        self.std = np.asarray(spec["std"], dtype=np.float32)
        self.clip = float(spec["clip"])
        self.path = model_file or model_path(name)
        self.model: Model = load_model(self.path, backend)
        self.invocations = 0

    def standardize(self, features: np.ndarray) -> np.ndarray:
        """The model's input for one or more feature vectors, shape (n, inputs)."""
        f = np.atleast_2d(features)[:, self.columns]
        return np.clip((f - self.mean) / self.std, -self.clip, self.clip).astype(np.float32)

    def __call__(self, features: np.ndarray) -> tuple[float, float]:
        """(arousal, tension) probabilities of one window's :func:`window_features`."""
        self.invocations += 1
        out = self.model.run({"features": self.standardize(features)})
        probs = np.asarray(next(iter(out.values())), dtype=np.float32).reshape(-1)
        return float(probs[0]), float(probs[1])


def _db(x: np.ndarray) -> float:
    return float(10.0 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


@dataclass
class _FrameInfo:
    far: np.ndarray
    near_db: float
    far_db: float
    near_speaking: bool
    far_speaking: bool
    end_s: float
    duration_s: float


@dataclass
class AffectStats:
    """Why windows were evaluated or skipped (counts)."""

    evaluated: int = 0
    skipped_no_prospect: int = 0
    skipped_agent_speaking: int = 0
    skipped_echo: int = 0


class AffectStage:
    """Streaming prospect affect: call per frame with both channels' speech states.

    Args:
        model: the affect model (``None`` is allowed only while the config is disabled).
        config: the stage's settings (:class:`AffectConfig`).
    """

    def __init__(self, model: AffectModel | None, config: AffectConfig = AffectConfig()) -> None:
        if config.enabled and model is None:
            raise ValueError("affect is enabled but no model was given")
        self.model = model
        self.config = config
        self.reset()

    def reset(self) -> None:
        """Forget buffered audio and counts of the current stream."""
        self._frames: deque[_FrameInfo] = deque()
        self._buffered = 0
        self._since_eval = 0
        self._evaluated_any = False
        self.stats = AffectStats()

    def __call__(self, frame: Any, near_speaking: bool, far_speaking: bool) -> AffectWindow | None:
        """Feed one :class:`edge.frames.Frame`; return a window's affect when one was evaluated.

        Args:
            frame: both channels, ``samples[0]`` near (agent), ``samples[1]`` far (prospect).
            near_speaking: the near channel's speech gate state for this frame.
            far_speaking: the far channel's speech gate state for this frame.
        """
        if not self.config.enabled:
            return None
        samples = frame.samples
        info = _FrameInfo(np.asarray(samples[1], dtype=np.float32).copy(), _db(samples[0]),
                          _db(samples[1]), bool(near_speaking), bool(far_speaking),
                          frame.start_s + frame.duration_s, frame.duration_s)
        self._frames.append(info)
        self._buffered += len(info.far)
        while self._buffered - len(self._frames[0].far) >= WINDOW_SAMPLES:
            self._buffered -= len(self._frames.popleft().far)
        self._since_eval += 1
        if self._since_eval < self.config.hop_frames:
            return None
        self._since_eval = 0
        return self._evaluate()

    def finish(self) -> AffectWindow | None:
        """At the end of a stream: evaluate the last partial hop if nothing was evaluated yet."""
        if not self.config.enabled or self._evaluated_any or not self._frames or self._since_eval == 0:
            return None
        self._since_eval = 0
        return self._evaluate()

    def _evaluate(self) -> AffectWindow | None:
        cfg = self.config
        frames = list(self._frames)
        far_s = sum(f.duration_s for f in frames if f.far_speaking)
        near_s = sum(f.duration_s for f in frames if f.near_speaking)
        if far_s < cfg.min_far_speech_s - 1e-9:
            self.stats.skipped_no_prospect += 1
            return None
        if near_s > cfg.max_near_speech_s + 1e-9:
            self.stats.skipped_agent_speaking += 1
            return None
        if self._far_follows_near(frames):
            self.stats.skipped_echo += 1
            return None
        x = np.concatenate([f.far for f in frames])[-WINDOW_SAMPLES:]
        if len(x) < WINDOW_SAMPLES:  # short stream: zero-pad at the end, as the training clips are
            x = np.concatenate([x, np.zeros(WINDOW_SAMPLES - len(x), dtype=np.float32)])
        assert self.model is not None
        arousal, tension = self.model(window_features(x))
        self.stats.evaluated += 1
        self._evaluated_any = True
        end_s = frames[-1].end_s
        return AffectWindow(max(0.0, end_s - WINDOW_S), end_s, arousal, tension)

    def _far_follows_near(self, frames: list[_FrameInfo]) -> bool:
        """True when the far channel's energy envelope tracks a comparably loud near channel."""
        near = np.array([f.near_db for f in frames])
        far = np.array([f.far_db for f in frames])
        if len(frames) < 4 or near.std() < 1e-6 or far.std() < 1e-6:
            return False
        if np.mean(near) < np.mean(far) - self.config.echo_margin_db:
            return False  # the agent's channel is much quieter: it hears the prospect, not vice versa
        corr = float(np.corrcoef(near, far)[0, 1])
        return corr > self.config.echo_corr


def summarize(windows: list[AffectWindow]) -> dict[str, Any]:
    """Summary of the prospect affect windows of a recording, for ``miroir analyze --json`` (the
    ``prospect_tense`` cue reads each window's ``prospect_tension`` in the metrics instead)."""
    if not windows:
        return {"windows": 0, "arousal_mean": None, "tension_mean": None, "tension_max": None,
                "tense_share": None}
    a = np.array([w.arousal for w in windows])
    t = np.array([w.tension for w in windows])
    return {"windows": len(windows), "arousal_mean": round(float(a.mean()), 4),
            "tension_mean": round(float(t.mean()), 4), "tension_max": round(float(t.max()), 4),
            "tense_share": round(float(np.mean(t > 0.5)), 4)}


def analysis_section(windows: list[AffectWindow], stage: AffectStage) -> dict[str, Any]:
    """The ``affect`` section of ``miroir analyze --json``: the windows a stage evaluated, their
    summary, what it skipped and its model."""
    s, model = stage.stats, stage.model
    assert model is not None
    return {"enabled": True,
            "far": {"windows": [w.as_dict() for w in windows], "summary": summarize(windows)},
            "skipped": {"no_prospect": s.skipped_no_prospect, "agent_speaking": s.skipped_agent_speaking,
                        "echo": s.skipped_echo},
            "model": {"backend": stage.config.backend, "file": model.path.name,
                      "invocations": model.invocations}}

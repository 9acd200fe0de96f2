"""Fatigue and vocal load: drift of the agent's own voice against the agent's shift baseline.

Fatigue is a physical state, never an emotion: the stage tracks pitch level and range, loudness,
articulation rate, harmonics-to-noise ratio, jitter, shimmer and response latency, and the
phonation time of the shift (vocal dose). Published drifts are small and person-specific (F0 up
8 to 13 Hz over a teaching day; no group effect at all in some call-centre studies), so nothing
here compares an agent with a population: each feature's drift is the difference between the mean
of the last ``track_speech_s`` of voiced windows and the mean of the shift's first
``baseline_speech_s``, in standard errors of that difference (from the baseline's own spread and
the prosody window's correlation length), signed so that positive means "in the direction of
fatigue". The combined drift is the weighted root sum of squares of the positive parts (plus the
vocal dose), mapped linearly to an index from 0 (within measurement noise) to 100. A break is
suggested when the index has stayed at or above ``break_on`` for ``break_min_s`` and withdrawn
when it falls under ``break_off``.

The level is also the channel's: a gain knob turned, the microphone moved further from the mouth or
another headset change it at once, by several dB, where fatigue moves it by about 2 dB an hour. A
change of :data:`STEP_DB` or more between two minutes of voice (:class:`LevelSteps`) is taken as
the channel's: the level's baseline follows it, and the drift before it is kept. So does the
first minute of a shift against a baseline loaded from the previous one (another headset, the knob
turned overnight). Harmonics-to-noise
ratio, jitter and shimmer read the room's noise as much as the voice: a window heard
:data:`SNR_DROP_DB` or more closer to the channel's noise floor than the baseline was
(``ProsodyWindow.floor_dbfs``) does not count towards them.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.campaign import FatigueConfig
from edge.prosody import ProsodyWindow

log = logging.getLogger(__name__)

FEATURES: dict[str, tuple[float, float, float]] = {
    # name: (direction of fatigue, weight, smallest meaningful standard error)
    "pitch": (+1.0, 1.0, 0.05),          # median f0, semitones: the voice rises with fatigue
    "pitch_range": (-1.0, 0.5, 0.05),    # 10th-90th percentile range, semitones: narrows
    "level": (-1.0, 1.0, 0.1),           # mean voiced level, dB: quieter
    "rate": (-1.0, 0.5, 0.02),           # articulation rate, syllables/s: slower
    "hnr": (-1.0, 0.5, 0.05),            # harmonics-to-noise ratio, dB: breathier
    "jitter": (+1.0, 0.5, 0.005),        # log local jitter: less regular cycles
    "shimmer": (+1.0, 0.5, 0.005),       # log local shimmer
}
"""Per-window features of the agent's voice; latency and vocal dose are added separately."""
LATENCY_WEIGHT = 0.5
DOSE_WEIGHT = 0.5
LATENCY_RESPONSES = 20
"""Responses learned as the latency baseline, and tracked."""
CORRELATION_S = 10.0
"""Consecutive windows read a 10 s prosody window that mostly overlaps the one before: this many
seconds of windows make one independent observation (ten windows of 1 s, five of 2 s)."""
VOICED_MIN = 0.2
"""A prosody window of the agent (10 s: ``Pipeline(prosody_window_s=10.0)``) counts for the fatigue
index only when at least this share of its 10 ms hops is voiced (2 s of voice in 10 s): under it,
its pitch median and range, level and voice quality rest on a few syllables. The number came with
the first pipeline (9e33ace) with no measure recorded: it is the floor the voice cues and the
baselines use (:data:`edge.signals.VOICED_MIN`), kept a separate name so either can be tuned alone."""
QUALITY = ("hnr", "jitter", "shimmer")
"""Voice-quality features, measured against the noise under the voice."""
SNR_DROP_DB = 10.0
"""A window whose voiced level over its noise floor is this much under the baseline's leaves the
voice-quality features alone. With the shared dishes noise added to EmoDB speech (the voice 36 dB
over its floor), 30 dB SNR (the voice 30 dB over its floor) left HNR where it was, 15 dB SNR (18 dB
over) lowered it by 1.8 dB: 9.5 standard errors, and a break."""
STEP_DB = 4.0
"""A change of the mean voiced level this large from one minute of voice to the next (10 s apart)
is the channel, not the voice. On 60-minute shifts of EmoDB speakers 03 and 08 through the
pipeline, with and without the 2 dB fatigue drift, such minutes differ by 2.95 dB at most; a gain
knob turned 6 dB, or the microphone moved away (8 dB), differ by 6."""
STEP_KEPT_DB = 3.0
"""A step measured smaller than this (the minute after it back near the minute before: the voice's
own swing) moves nothing; the level's windows around it are left out all the same."""
STEP_BLOCK_S = 60.0
"""Seconds of voiced windows on each side of a level step."""
STEP_GAP_S = CORRELATION_S
"""Seconds of voiced windows left out between the two sides: the prosody window spreads a step."""


class LevelSteps:
    """Finds abrupt changes of the voiced level (the channel changed) in a stream of windows."""

    def __init__(self, dt_s: float) -> None:
        self.block = max(1, round(STEP_BLOCK_S / dt_s))
        self.gap = round(STEP_GAP_S / dt_s)
        self._levels: deque[float] = deque(maxlen=2 * self.block + self.gap)
        self._before_db: float | None = None
        self._after: list[float] = []

    def expect(self, before_db: float) -> None:
        """Measure a step from ``before_db`` (the level a previous shift learned) to the next
        minute of voice: the headset may have changed since."""
        self._before_db, self._after = before_db, []
        self._levels.clear()

    @property
    def pending(self) -> bool:
        """Whether a step was seen and its size is still being measured."""
        return self._before_db is not None

    def __call__(self, level_db: float) -> tuple[bool, float | None]:
        """Add one voiced window's level, dB.

        Returns:
            Whether a step was just seen (the last ``block + gap`` windows straddle it), and the
            step's size in dB once measured (the minute after it against the minute before it).
        """
        if self._before_db is not None:
            self._after.append(level_db)
            if len(self._after) < self.gap + self.block:
                return False, None
            step_db = float(np.mean(self._after[self.gap:])) - self._before_db
            self._before_db, self._after = None, []
            return False, step_db
        self._levels.append(level_db)
        if len(self._levels) < self._levels.maxlen:  # type: ignore[operator]
            return False, None
        values = list(self._levels)
        before_db = float(np.mean(values[: self.block]))
        if abs(float(np.mean(values[-self.block:])) - before_db) < STEP_DB:
            return False, None
        self._before_db = before_db
        self._levels.clear()
        return True, None


def window_features(w: ProsodyWindow) -> dict[str, float] | None:
    """The tracked features of one prosody window, or None when it held too little voice."""
    if (w.voiced_ratio < VOICED_MIN or not w.f0_median_hz or w.pitch_range_st is None
            or w.level_dbfs is None or w.hnr_db is None or not w.articulation_rate_syl_s
            or not w.jitter_local or not w.shimmer_local):
        return None
    return {"pitch": 12.0 * math.log2(w.f0_median_hz / 100.0), "pitch_range": w.pitch_range_st,
            "level": w.level_dbfs, "rate": w.articulation_rate_syl_s, "hnr": w.hnr_db,
            "jitter": math.log(w.jitter_local), "shimmer": math.log(w.shimmer_local)}


@dataclass
class FatigueBaseline:
    """The agent's shift baseline: per feature, the mean and standard deviation of windows."""

    mean: dict[str, float] = field(default_factory=dict)
    sd: dict[str, float] = field(default_factory=dict)
    n: int = 0
    """Per-second windows it was learned from."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (to load it at the agent's next shift)."""
        return {"mean": dict(self.mean), "sd": dict(self.sd), "n": self.n}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FatigueBaseline:
        """Inverse of :meth:`as_dict`.

        Raises:
            ValueError: a mean without its spread (or the reverse), a feature missing or unknown
                (the latency and ``snr``, the voice over the noise floor, may be missing), a value
                that is not finite, a negative spread.
        """
        mean = {str(k): float(v) for k, v in dict(d["mean"]).items()}
        sd = {str(k): float(v) for k, v in dict(d["sd"]).items()}
        if mean.keys() != sd.keys():
            raise ValueError(f"fatigue baseline: means {sorted(mean)} but spreads {sorted(sd)}")
        missing, unknown = set(FEATURES) - mean.keys(), mean.keys() - set(FEATURES) - {"latency", "snr"}
        if missing or unknown:
            raise ValueError(f"fatigue baseline: missing {sorted(missing)}, unknown {sorted(unknown)}")
        values = [*mean.values(), *sd.values()]
        if not all(math.isfinite(v) for v in values) or min(sd.values(), default=0.0) < 0.0:
            raise ValueError("fatigue baseline: a value is not finite, or a spread is negative")
        return cls(mean, sd, max(0, int(d["n"])))

    def copy(self) -> FatigueBaseline:
        """An independent copy (a shift's learning must not change the one it started from)."""
        return FatigueBaseline(dict(self.mean), dict(self.sd), self.n)


@dataclass
class FatigueState:
    """The fatigue stage's latest output."""

    index: float | None
    """0..100; None until the baseline is learned."""
    z: dict[str, float]
    """Signed drift per feature (and ``latency``), in standard errors; positive = towards fatigue."""
    phonation_min: float
    """Phonation time of the shift so far, minutes (vocal dose)."""
    break_suggested: bool

    def fields(self) -> dict[str, Any]:
        """Flat ``fatigue_*`` metrics fields (absent where undefined)."""
        out: dict[str, Any] = {"fatigue_phonation_min": round(self.phonation_min, 2)}
        if self.index is not None:
            out["fatigue_index"] = round(self.index, 1)
            out["break_suggested"] = self.break_suggested
            out.update({f"fatigue_{k}_z": round(v, 2) for k, v in self.z.items()})
        return out


class Fatigue:
    """Fatigue index of one agent over a shift, fed once per metrics window; no I/O.

    Args:
        config: baseline and tracking lengths, index mapping and break hysteresis.
        baseline: a baseline from the agent's previous shifts (learned from this shift if None).
    """

    def __init__(self, config: FatigueConfig | None = None,
                 baseline: FatigueBaseline | None = None) -> None:
        self.config = config or FatigueConfig()
        self._loaded = baseline
        self.reset()

    def reset(self) -> None:
        """A new shift: vocal dose, tracking and the break suggestion start over."""
        self.baseline = self._loaded.copy() if self._loaded else FatigueBaseline()
        self._base_s = 0.0
        self._base: dict[str, list[float]] = {k: [] for k in FEATURES}
        self._track: dict[str, deque[float]] = {k: deque() for k in FEATURES}
        self._track_sum = dict.fromkeys(FEATURES, 0.0)  # running sums: a mean per tick in O(1)
        self._steps: LevelSteps | None = None
        self._snr_base: list[float] = []
        self._lat_base: list[float] = []
        self._lat_track: deque[float] = deque(maxlen=LATENCY_RESPONSES)
        self.phonation_s = 0.0
        self._over_s = 0.0
        self.break_suggested = False
        self.state = FatigueState(None, {}, 0.0, False)

    @property
    def ready(self) -> bool:
        """Whether the shift baseline is known."""
        return self._base_s >= self.config.baseline_speech_s or bool(self._loaded and self.baseline.mean)

    def keep_baseline(self) -> None:
        """From the next :meth:`reset` on, start from the baseline learned so far (a new shift)."""
        if self.ready:
            self._loaded = self.baseline.copy()

    def forget_baseline(self) -> None:
        """From the next :meth:`reset` on, learn the baseline afresh."""
        self._loaded = None

    def __call__(self, window: ProsodyWindow | None, dt_s: float,
                 latencies_s: Sequence[float] = ()) -> FatigueState:
        """Add one metrics window.

        Args:
            window: the agent's prosody over the last prosody window (None if unavailable).
            dt_s: length of the metrics window, seconds.
            latencies_s: the agent's response latencies of this window, seconds (each answer
                once: :meth:`edge.conversation.Conversation.take_responses`).

        Returns:
            The updated :class:`FatigueState`.
        """
        cfg = self.config
        if window is not None:
            self.phonation_s += window.voiced_ratio * dt_s
        feats = window_features(window) if window is not None else None
        for lat_s in latencies_s:
            self._add_latency(float(lat_s))
        if feats is not None and window is not None:
            snr_db = None if window.floor_dbfs is None else feats["level"] - window.floor_dbfs
            self._level_step(feats, dt_s)
            if not self.ready:
                if snr_db is not None:
                    self._snr_base.append(snr_db)
                for k, v in feats.items():
                    self._base[k].append(v)  # (the level is left out while a step is measured)
                self.baseline.n += 1
                self._base_s += dt_s
                if self.ready:
                    self._freeze()
            else:
                keep = max(1, int(cfg.track_speech_s / dt_s))
                if snr_db is not None and "snr" not in self.baseline.mean:
                    # a baseline saved without it (the release before): this shift's first minutes
                    self._snr_base.append(snr_db)
                    if len(self._snr_base) * dt_s >= cfg.baseline_speech_s:
                        self._freeze_snr()
                if snr_db is not None and self.baseline.mean.get("snr", snr_db) - snr_db >= SNR_DROP_DB:
                    for k in QUALITY:  # the noise, not the voice
                        del feats[k]
                for k, v in feats.items():
                    q = self._track[k]
                    q.append(v)
                    self._track_sum[k] += v
                    while len(q) > keep:
                        self._track_sum[k] -= q.popleft()
        self.state = self._evaluate(dt_s)
        return self.state

    def _level_step(self, feats: dict[str, float], dt_s: float) -> None:
        """Follow a channel's level step: its windows are left out of the level while it is
        measured, then the level's baseline (or the baseline being learned) moves by its size."""
        if self._steps is None:
            self._steps = LevelSteps(dt_s)
            if self.ready and "level" in self.baseline.mean:  # loaded from a previous shift
                self._steps.expect(self.baseline.mean["level"])
        seen, step_db = self._steps(feats["level"])
        if seen:  # the windows since the minute before the step mix both channels
            n = self._steps.block + self._steps.gap
            if self.ready:
                q = self._track["level"]
                for _ in range(min(len(q), n)):
                    self._track_sum["level"] -= q.pop()
            else:
                del self._base["level"][-n:]
        if step_db is not None and abs(step_db) >= STEP_KEPT_DB:
            log.info("the voiced level stepped by %+.1f dB within a minute: the channel changed "
                     "(gain, microphone), not the voice; the level's baseline follows it", step_db)
            if not self.ready:
                self._base["level"] = [v + step_db for v in self._base["level"]]
            else:
                self.baseline.mean["level"] += step_db
                track = self._track["level"]
                self._track["level"] = deque(v + step_db for v in track)
                self._track_sum["level"] += step_db * len(track)
        if self._steps.pending or seen or step_db is not None:
            del feats["level"]

    def _add_latency(self, lat_s: float) -> None:
        if "latency" in self.baseline.mean:
            self._lat_track.append(lat_s)
        else:  # the agent's first answers of the shift (on their own clock: answers are rarer)
            self._lat_base.append(lat_s)
            if len(self._lat_base) >= LATENCY_RESPONSES:
                self.baseline.mean["latency"] = float(np.mean(self._lat_base))
                self.baseline.sd["latency"] = float(np.std(self._lat_base, ddof=1))

    def _freeze(self) -> None:
        b = self.baseline
        for k, values in self._base.items():
            if not values:  # the level, all of it left out around a step
                continue
            b.mean[k] = float(np.mean(values))
            b.sd[k] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        self._base = {k: [] for k in FEATURES}
        self._freeze_snr()

    def _freeze_snr(self) -> None:
        """The voice's level over the channel's noise floor, dB, in the baseline."""
        if self._snr_base:
            self.baseline.mean["snr"] = float(np.mean(self._snr_base))
            self.baseline.sd["snr"] = float(np.std(self._snr_base))
            self._snr_base = []

    def _evaluate(self, dt_s: float) -> FatigueState:
        cfg = self.config
        phon_min = self.phonation_s / 60.0
        if not self.ready:
            return FatigueState(None, {}, phon_min, False)
        b = self.baseline
        z: dict[str, float] = {}
        total = 0.0
        # independent observations: the windows' seconds over CORRELATION_S, whatever window_s is
        obs_base = max(b.n, 1) * dt_s / CORRELATION_S
        for k, (sign, weight, floor) in FEATURES.items():
            n_track = len(self._track[k])  # the level's is shorter for a while after a step
            obs_track = n_track * dt_s / CORRELATION_S
            if k not in b.mean or obs_track < 3.0 - 1e-9:
                continue
            se = max(floor, b.sd[k] * math.sqrt(1.0 / obs_track + 1.0 / obs_base))
            z[k] = sign * (self._track_sum[k] / n_track - b.mean[k]) / se
            total += weight * max(0.0, z[k]) ** 2
        if "latency" in b.mean and len(self._lat_track) >= 5:
            se = max(0.05, b.sd["latency"] * math.sqrt(1 / len(self._lat_track) + 1 / LATENCY_RESPONSES))
            z["latency"] = (float(np.mean(self._lat_track)) - b.mean["latency"]) / se
            total += LATENCY_WEIGHT * max(0.0, z["latency"]) ** 2
        dose = phon_min / cfg.dose_full_min
        total += DOSE_WEIGHT * dose ** 2
        drift = math.sqrt(total)
        index = 100.0 * min(1.0, max(0.0, (drift - cfg.drift_zero) / (cfg.drift_full - cfg.drift_zero)))
        if index >= cfg.break_on:
            self._over_s += dt_s
        else:
            self._over_s = 0.0
        if not self.break_suggested and index >= cfg.break_on and self._over_s >= cfg.break_min_s:
            self.break_suggested = True
        elif self.break_suggested and index < cfg.break_off:
            self.break_suggested = False
        return FatigueState(index, z, phon_min, self.break_suggested)

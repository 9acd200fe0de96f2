"""Signal quality of one channel: repairs what a broken driver sends and says what it saw.

Runs first on every frame, before any analysis: NaN and infinite samples become zeros, a DC offset
is removed, and the channel is labelled so that nothing downstream fabricates metrics from a dead
line (a dead channel reads "no signal", never "silent prospect").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SIGNAL_STATES = ("ok", "clipped", "dc", "nan", "none")
"""Most severe last: ``none`` is a dead or disconnected channel (digital zero or flat line)."""


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the signal-quality stage."""

    dead_after_s: float = 2.0
    """A channel flat for this long has no signal."""
    flat_below: float = 2.0 / 32768
    """Peak-to-peak amplitude under which a frame counts as flat (digital silence or a constant)."""
    clip_level: float = 0.999
    """Absolute sample value counted as clipped."""
    clip_ratio: float = 0.01
    """Share of clipped samples in a frame that marks it as clipped."""
    dc_level: float = 0.05
    """Absolute running mean above which the channel reports a DC offset."""
    dc_time_s: float = 0.5
    """Time constant of the running mean used to remove DC."""


class SignalQuality:
    """Repairs every channel of a frame at once and labels each (one of :data:`SIGNAL_STATES`).

    Args:
        config: thresholds.
        channels: rows of the frames it will see.
        frame_s: length of a frame, seconds.
    """

    def __init__(self, config: QualityConfig = QualityConfig(), channels: int = 2,
                 frame_s: float = 0.032) -> None:
        self.config = config
        self.channels = channels
        self.frame_s = frame_s
        self._alpha = min(1.0, frame_s / config.dc_time_s)
        self._levels: dict[np.dtype, tuple[float, float]] = {}
        self.reset()

    def reset(self) -> None:
        """Forget the running DC estimates and the flat-line timers."""
        self._dc = [0.0] * self.channels
        self._flat_s = [0.0] * self.channels
        self.states = ["ok"] * self.channels
        self.nan_frames = np.zeros(self.channels, dtype=np.int64)
        self.clipped_frames = np.zeros(self.channels, dtype=np.int64)
        self._last: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, list[bool]] | None = None

    def _clip_levels(self, dtype: np.dtype) -> tuple[float, float]:
        """The clip thresholds as numpy compares them with samples of ``dtype`` (rounded to it)."""
        levels = self._levels.get(dtype)
        if levels is None:
            level = self.config.clip_level
            if np.issubdtype(dtype, np.floating):
                levels = (float(dtype.type(level)), float(dtype.type(-level)))
            else:
                levels = (level, -level)
            self._levels[dtype] = levels
        return levels

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Return the repaired (channels, n) samples; :attr:`states` says what each row held.

        Args:
            samples: float32 samples, full scale +-1.0, one row per channel.

        Returns:
            The samples with non-finite values zeroed, DC removed, dead channels zeroed.
        """
        # a handful of numpy calls on the whole frame, then plain floats per channel: with two
        # channels, numpy's per-call overhead would dominate every per-channel step
        cfg = self.config
        hi, lo = np.maximum.reduce(samples, axis=1), np.minimum.reduce(samples, axis=1)
        bad = [not math.isfinite(v) for v in (hi + lo).tolist()]  # NaN and inf propagate
        if True in bad:
            samples = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)
            self.nan_frames += bad
            hi, lo = np.maximum.reduce(samples, axis=1), np.minimum.reduce(samples, axis=1)
        flat = (hi - lo < cfg.flat_below).tolist()  # in the samples' precision
        means = (np.add.reduce(samples, axis=1) / samples.shape[1]).tolist()
        frame_s, dead_after_s, alpha = self.frame_s, cfg.dead_after_s, self._alpha
        flat_s = [f + frame_s if is_flat else 0.0 for f, is_flat in zip(self._flat_s, flat, strict=True)]
        self._flat_s = flat_s
        dead = [f >= dead_after_s for f in flat_s]
        dc = [d + alpha * (m - d) for d, m in zip(self._dc, means, strict=True)]
        self._dc = dc
        clipped = [False] * self.channels
        top, bottom = self._clip_levels(samples.dtype)
        if any(h >= top or low <= bottom for h, low in zip(hi.tolist(), lo.tolist(), strict=True)):
            # count only when a sample reached full scale
            clipped = ((np.abs(samples) >= cfg.clip_level).sum(axis=1)
                       > cfg.clip_ratio * samples.shape[1]).tolist()
            self.clipped_frames += [c and not b for c, b in zip(clipped, bad, strict=True)]
        dc_level = cfg.dc_level
        self.states = [
            "none" if dead[i] else "nan" if bad[i] else "clipped" if clipped[i]
            else "dc" if abs(dc[i]) > dc_level else "ok"
            for i in range(self.channels)
        ]
        out = samples
        shift = None
        if max(abs(d) for d in dc) > 1e-4:
            shift = np.array(dc, dtype=np.float32)
            out = samples - shift[:, None]
        if True in dead:
            out = out.copy() if out is samples else out
            out[np.array(dead)] = 0.0
        out = out.astype(np.float32, copy=False)
        self._last = (out, hi, lo, shift, dead)
        return out

    def peak_to_peak(self, channel: int) -> float:
        """Peak-to-peak amplitude of one row of the last repaired frame, as ``row.max() - row.min()``
        in float32 would give it, from the extremes already found (no pass over the samples).

        Args:
            channel: row of the frame.

        Returns:
            The peak-to-peak amplitude (full scale 2.0); 0.0 before the first frame.
        """
        if self._last is None:
            return 0.0
        out, hi, lo, shift, dead = self._last
        if dead[channel]:
            return 0.0
        if hi.dtype != np.float32:  # the repaired row was rounded to float32 after the shift
            row = out[channel]
            return float(row.max() - row.min())
        top, bottom = hi[channel], lo[channel]
        if shift is not None:  # float32 rounding is monotonic: the extremes stay the extremes
            top, bottom = top - shift[channel], bottom - shift[channel]
        return float(top - bottom)

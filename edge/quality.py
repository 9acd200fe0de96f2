"""Signal quality of one channel: repairs what a broken driver sends and says what it saw.

Runs first on every frame, before any analysis: NaN and infinite samples become zeros, a DC offset
is removed, and the channel is labelled so that nothing downstream fabricates metrics from a dead
line (a dead channel reads "no signal", never "silent prospect").
"""

from __future__ import annotations

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
        self.reset()

    def reset(self) -> None:
        """Forget the running DC estimates and the flat-line timers."""
        self._dc = np.zeros(self.channels)
        self._flat_s = np.zeros(self.channels)
        self.states = ["ok"] * self.channels
        self.nan_frames = np.zeros(self.channels, dtype=np.int64)
        self.clipped_frames = np.zeros(self.channels, dtype=np.int64)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Return the repaired (channels, n) samples; :attr:`states` says what each row held.

        Args:
            samples: float32 samples, full scale +-1.0, one row per channel.

        Returns:
            The samples with non-finite values zeroed, DC removed, dead channels zeroed.
        """
        cfg = self.config
        hi, lo = samples.max(axis=1), samples.min(axis=1)
        bad = ~np.isfinite(hi + lo)  # NaN and inf propagate into the extremes: one cheap test
        if bad.any():
            samples = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)
            self.nan_frames += bad
            hi, lo = samples.max(axis=1), samples.min(axis=1)
        self._flat_s = np.where(hi - lo < cfg.flat_below, self._flat_s + self.frame_s, 0.0)
        dead = self._flat_s >= cfg.dead_after_s
        self._dc += self._alpha * (samples.mean(axis=1) - self._dc)
        clipped = np.zeros(self.channels, dtype=bool)
        near_full = (hi >= cfg.clip_level) | (lo <= -cfg.clip_level)
        if near_full.any():  # count only when a sample reached full scale
            clipped = ((np.abs(samples) >= cfg.clip_level).sum(axis=1)
                       > cfg.clip_ratio * samples.shape[1])
            self.clipped_frames += clipped & ~bad
        self.states = [
            "none" if dead[i] else "nan" if bad[i] else "clipped" if clipped[i]
            else "dc" if abs(self._dc[i]) > cfg.dc_level else "ok"
            for i in range(self.channels)
        ]
        out = samples
        if np.abs(self._dc).max() > 1e-4:
            out = samples - self._dc[:, None].astype(np.float32)
        if dead.any():
            out = out.copy() if out is samples else out
            out[dead] = 0.0
        return out.astype(np.float32, copy=False)

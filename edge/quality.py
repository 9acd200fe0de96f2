"""Signal quality of one channel: repairs what a broken driver sends and says what it saw.

Runs first on every frame, before any analysis: NaN and infinite samples become zeros, a DC offset
is removed, and the channel is labelled so that nothing downstream fabricates metrics from a dead
line (a dead channel reads "no signal", never "silent prospect").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SIGNAL_STATES = ("ok", "dc", "clipped", "nan", "none")
"""Most severe last: ``none`` is a dead or disconnected channel (digital zero or flat line)."""


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the signal-quality stage."""

    dead_after_s: float = 2.0
    """A channel flat for this long has no signal."""
    flat_below: float = 4.0 / 32768
    """Peak-to-peak amplitude under which a frame counts as flat (digital silence or a constant):
    4 LSB of 16-bit audio, so that digital silence dithered to +-1 LSB (sox does it by default
    when it converts to 16 bits; up to 3.7 LSB once resampled from 8 kHz) is still flat. A live
    microphone or line has far more noise than that (-80 dBFS RMS is over 20 LSB peak-to-peak)."""
    clip_level: float = 0.999
    """Absolute sample value counted as clipped."""
    clip_ratio: float = 0.01
    """Share of clipped samples in a frame that marks it as clipped."""
    plateau_level: float = 0.97
    """Absolute value from which a run of equal samples is a plateau: a file's top code can lie
    below ``clip_level`` (G.711 A-law 32256/32768 = 0.984, mu-law 32124/32768 = 0.980, 8-bit PCM's
    positive rail 127/128 = 0.992)."""
    plateau_samples: int = 8
    """Equal samples in a row (2 or more), at ``plateau_level`` or above, that mark a frame as clipped (0.5 ms
    at 16 kHz). On EmoDB's 411 clips (peaks at full scale) as 16 kHz G.711 and 8-bit, the loudest
    peaks stay on the top code for up to 7 samples; driven +20 dB, 409 of 411 have a run of 8."""
    dc_level: float = 0.05
    """Absolute running mean above which the channel reports a DC offset."""
    dc_time_s: float = 0.5
    """Time constant of the running mean used to remove DC."""


def _plateau(samples: np.ndarray, loud: np.ndarray, run: int) -> np.ndarray:
    """Per row of ``samples``, whether it holds ``run`` (2 or more) equal samples in a row, all
    ``loud``."""
    pairs = max(1, run - 1)  # equal neighbours in a row
    rows = samples.shape[0]
    if samples.shape[1] <= pairs:
        return np.zeros(rows, dtype=bool)
    same = (samples[:, 1:] == samples[:, :-1]) & loud[:, 1:] & loud[:, :-1]
    total = np.zeros((rows, same.shape[1] + 1), dtype=np.int32)
    np.cumsum(same, axis=1, out=total[:, 1:])
    found: np.ndarray = (total[:, pairs:] - total[:, :-pairs]).max(axis=1) >= pairs
    return found


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
        self.nan_frames = np.zeros(channels, dtype=np.int64)
        """Frames per channel that held NaN or infinity (a broken driver), since the stage began."""
        self.clipped_frames = np.zeros(channels, dtype=np.int64)
        """Frames per channel that clipped, since the stage began (kept across :meth:`reset`)."""
        self.reset()

    def reset(self) -> None:
        """Forget the running DC estimates and the flat-line timers."""
        self._dc = [0.0] * self.channels
        self._dc_column = np.zeros((self.channels, 1), dtype=np.float32)
        """The running DC estimates as a float32 column, to subtract from a frame."""
        self._flat_s = [0.0] * self.channels
        self.states = ["ok"] * self.channels

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Return the repaired (channels, n) samples; :attr:`states` says what each row held.

        Args:
            samples: float32 samples, full scale +-1.0, one row per channel.

        Returns:
            The samples with non-finite values zeroed, DC removed, dead channels zeroed.
        """
        # three numpy reductions on the whole frame, then plain floats per channel: with two
        # channels, numpy's per-call overhead would dominate every per-channel step
        cfg = self.config
        hi = np.maximum.reduce(samples, axis=1).tolist()  # NaN propagates
        lo = np.minimum.reduce(samples, axis=1).tolist()
        bad = [False] * self.channels
        if not math.isfinite(sum(hi) - sum(lo)):  # a NaN or an infinity in some channel
            bad = [not (math.isfinite(h) and math.isfinite(m)) for h, m in zip(hi, lo, strict=True)]
            samples = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)
            self.nan_frames += bad
            hi = np.maximum.reduce(samples, axis=1).tolist()
            lo = np.minimum.reduce(samples, axis=1).tolist()
        means = (np.add.reduce(samples, axis=1) / samples.shape[1]).tolist()
        clipped = [False] * self.channels
        if max(hi) >= cfg.plateau_level or min(lo) <= -cfg.plateau_level:
            # count only when a sample came near full scale (compared in the samples' precision)
            size = np.abs(samples)
            full = (size >= cfg.clip_level).sum(axis=1) > cfg.clip_ratio * samples.shape[1]
            clipped = (full | _plateau(samples, size >= cfg.plateau_level,
                                       cfg.plateau_samples)).tolist()
            self.clipped_frames += [c and not b for c, b in zip(clipped, bad, strict=True)]
        dead = [False] * self.channels
        states = ["ok"] * self.channels
        for i in range(self.channels):
            flat = hi[i] - lo[i] < cfg.flat_below
            self._flat_s[i] = self._flat_s[i] + self.frame_s if flat else 0.0
            dead[i] = self._flat_s[i] >= cfg.dead_after_s
            dc = self._dc[i] = self._dc[i] + self._alpha * (means[i] - self._dc[i])
            if dead[i]:
                states[i] = "none"
            elif bad[i]:
                states[i] = "nan"
            elif clipped[i]:
                states[i] = "clipped"
            elif abs(dc) > cfg.dc_level:
                states[i] = "dc"
        self.states = states
        out = samples
        if max(self._dc) > 1e-4 or min(self._dc) < -1e-4:
            self._dc_column[:, 0] = self._dc  # rounded to float32, as the samples
            out = samples - self._dc_column
        if True in dead:
            out = out.copy() if out is samples else out
            out[np.array(dead)] = 0.0
        return out.astype(np.float32, copy=False)

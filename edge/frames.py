"""Audio frames: the unit every stage receives. The format travels with the frame."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATE_HZ = 16_000
"""Sample rate of every frame after the source (Silero VAD's native rate)."""
FRAME_SAMPLES = 512
"""Samples per frame per channel: 32 ms at 16 kHz, Silero VAD's chunk."""
FRAME_S = FRAME_SAMPLES / RATE_HZ
"""Length of a frame, seconds (32 ms): the step of every per-frame stage and of the VAD traces."""


@dataclass(frozen=True)
class Frame:
    """One frame of both channels: ``samples[0]`` is near (agent), ``samples[1]`` far (line)."""

    samples: np.ndarray
    """float32 array of shape (2, n), full scale +-1.0."""
    rate_hz: int
    """Sample rate of ``samples``."""
    start_s: float
    """Audio time of the first sample, from the start of the stream."""
    index: int
    """Frame number in the stream, from 0."""

    @property
    def duration_s(self) -> float:
        """Length of the frame in seconds."""
        return self.samples.shape[1] / self.rate_hz


class Framer:
    """Re-blocks arbitrary two-channel blocks into fixed frames of ``frame_samples``."""

    def __init__(self, rate_hz: int = RATE_HZ, frame_samples: int = FRAME_SAMPLES) -> None:
        self.rate_hz = rate_hz
        self.frame_samples = frame_samples
        self.reset()

    def reset(self) -> None:
        """Forget buffered samples and restart the frame count."""
        self._buf = np.zeros((2, 0), dtype=np.float32)
        self._index = 0

    def __call__(self, block: np.ndarray) -> list[Frame]:
        """Append a (2, n) float32 block; return the complete frames it finishes.

        Args:
            block: two-channel samples at ``rate_hz``.

        Returns:
            Zero or more frames, in order.
        """
        if block.ndim != 2 or block.shape[0] != 2:
            raise ValueError(f"expected a (2, n) block, got shape {block.shape}")
        block = block.astype(np.float32, copy=False)
        buf = np.concatenate([self._buf, block], axis=1) if self._buf.shape[1] else block
        frames = []
        n = self.frame_samples
        whole = buf.shape[1] // n
        for i in range(whole):
            frames.append(Frame(np.ascontiguousarray(buf[:, i * n:(i + 1) * n]), self.rate_hz,
                                self._index * n / self.rate_hz, self._index))
            self._index += 1
        self._buf = buf[:, whole * n:].copy()  # never a view of the caller's block
        return frames

"""Voice activity: Silero VAD probabilities per channel, and a speech gate with hysteresis."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.frames import FRAME_SAMPLES, RATE_HZ, Frame
from edge.runtime import Model

CONTEXT_SAMPLES = 64
"""Silero VAD (v5 and later) sees the last 64 samples of the previous chunk before each chunk."""
STATE_SHAPE = (2, 128)


class SileroVad:
    """Speech probability of each channel of a frame, both channels in one inference call.

    The model is recurrent: its state and the 64-sample context carry from frame to frame, one per
    channel (the two channels are the two rows of one batch). An optional energy pre-gate skips
    inference for a channel in clear silence (its state is kept); both channels in clear silence
    means no inference at all.

    Args:
        model: the Silero VAD model.
        channels: rows of the batch.
        gate_dbfs: RMS level below which a frame may be skipped; None disables the gate.
        gate_max_prob: a frame is skipped only while the channel's last probability is below this
            (clear silence after the model said so); a skipped frame repeats that probability.
    """

    def __init__(self, model: Model, channels: int = 2, gate_dbfs: float | None = None,
                 gate_max_prob: float = 0.05) -> None:
        self.model = model
        self.channels = channels
        self.gate_dbfs = gate_dbfs
        self.gate_max_prob = gate_max_prob
        self._gate_power = None if gate_dbfs is None else 10 ** (gate_dbfs / 10)
        # the published ONNX file takes the sample rate; the converted TFLite file is 16 kHz only
        self._sr = {"sr": np.array(RATE_HZ, dtype=np.int64)} if "sr" in model.input_names else {}
        self.inferences = 0
        self.gated = 0
        self.reset()

    def reset(self) -> None:
        """Clear the recurrent state and context of every channel."""
        self._state = np.zeros((STATE_SHAPE[0], self.channels, STATE_SHAPE[1]), dtype=np.float32)
        self._context = np.zeros((self.channels, CONTEXT_SAMPLES), dtype=np.float32)
        self._last = np.zeros(self.channels, dtype=np.float32)

    def __call__(self, frame: Frame) -> np.ndarray:
        """Return the speech probability (0..1) of each channel of ``frame``, shape (channels,)."""
        if frame.rate_hz != RATE_HZ or frame.samples.shape != (self.channels, FRAME_SAMPLES):
            raise ValueError(
                f"Silero VAD needs ({self.channels}, {FRAME_SAMPLES}) frames at {RATE_HZ} Hz, got "
                f"{frame.samples.shape} at {frame.rate_hz} Hz"
            )
        x = np.concatenate([self._context, frame.samples], axis=1)
        self._context = x[:, -CONTEXT_SAMPLES:]
        if self._gate_power is None:
            rows = None
        else:
            loud = ((np.mean(frame.samples * frame.samples, axis=1) >= self._gate_power)
                    | (self._last >= self.gate_max_prob))
            self.gated += int(self.channels - loud.sum())
            if loud.all():
                rows = None
            elif not loud.any():
                return self._last.copy()
            else:
                rows = np.flatnonzero(loud)
        if rows is None:
            out = self.model.run({"input": x, "state": self._state, **self._sr})
            self._state = out["stateN"]
            self.inferences += 1
            self._last = np.asarray(out["output"][:, 0], dtype=np.float32)
            return self._last.copy()
        out = self.model.run({"input": x[rows], "state": self._state[:, rows], **self._sr})
        self._state[:, rows] = out["stateN"]
        self.inferences += 1
        self._last[rows] = out["output"][:, 0]
        return self._last.copy()


@dataclass(frozen=True)
class GateConfig:
    """Hysteresis of the speech gate."""

    on_threshold: float = 0.5
    """Probability at or above which speech may start."""
    off_threshold: float = 0.35
    """Probability below which speech may end."""
    min_speech_ms: float = 64.0
    """Speech must stay above ``on_threshold`` this long before it starts (filters clicks)."""
    min_silence_ms: float = 160.0
    """Speech ends only after this long below ``off_threshold`` (bridges short gaps)."""


class SpeechGate:
    """Turns one channel's probabilities into a speech/no-speech state with hysteresis.

    Start and end times are back-dated to the first frame of the run that confirmed them, so the
    segments match the audio rather than the confirmation delay.
    """

    def __init__(self, config: GateConfig = GateConfig(), frame_s: float = FRAME_SAMPLES / RATE_HZ):
        self.config = config
        self.frame_s = frame_s
        self.reset()

    def reset(self) -> None:
        """Return to silence and forget pending runs."""
        self.speaking = False
        self._run_start_s: float | None = None

    def __call__(self, prob: float, start_s: float) -> str | None:
        """Feed one frame's probability; return ``"start"``, ``"end"`` or ``None``.

        Args:
            prob: the channel's speech probability for the frame.
            start_s: the frame's start time in seconds.

        Returns:
            The transition this frame confirmed, if any. ``transition_s`` holds its time.
        """
        cfg = self.config
        if not self.speaking:
            if prob >= cfg.on_threshold:
                if self._run_start_s is None:
                    self._run_start_s = start_s
                if start_s + self.frame_s - self._run_start_s >= cfg.min_speech_ms / 1000 - 1e-9:
                    self.speaking = True
                    self.transition_s = self._run_start_s
                    self._run_start_s = None
                    return "start"
            else:
                self._run_start_s = None
        else:
            if prob < cfg.off_threshold:
                if self._run_start_s is None:
                    self._run_start_s = start_s
                if start_s + self.frame_s - self._run_start_s >= cfg.min_silence_ms / 1000 - 1e-9:
                    self.speaking = False
                    self.transition_s = self._run_start_s
                    self._run_start_s = None
                    return "end"
            else:
                self._run_start_s = None
        return None


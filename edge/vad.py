"""Voice activity: Silero VAD probabilities per channel, and a speech gate with hysteresis."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge.frames import FRAME_SAMPLES, RATE_HZ, Frame
from edge.runtime import Model

CONTEXT_SAMPLES = 64
"""Silero VAD (v5 and later) sees the last 64 samples of the previous chunk before each chunk."""
STATE_SHAPE = (2, 128)
FLOOR_RISE_DB_S = 3.0
"""How fast a channel's noise floor estimate may rise (a louder noise), dB per second."""


class SileroVad:
    """Speech probability of each channel of a frame, both channels in one inference call.

    The model is recurrent: its state and the 64-sample context carry from frame to frame, one per
    channel (the two channels are the two rows of one batch). An optional energy pre-gate holds a
    channel in clear silence: its state is kept and its last probability repeated; both channels in
    clear silence means no inference at all. Holding matters more than the saving: over a long
    quiet stretch the state drifts, and the model hears the next onset later the longer the channel
    was quiet (see :data:`edge.pipeline.VAD_GATE_DBFS`). On a noisy line, a frame close to the
    channel's own noise floor counts as quiet too (``gate_above_floor_db``).

    Args:
        model: the Silero VAD model.
        channels: rows of the batch.
        gate_dbfs: RMS level below which a frame may be held; None disables the gate.
        gate_max_prob: clear silence: a frame is held only once the model has scored the channel
            under this for ``gate_after_ms`` in a row; a held frame repeats the last probability.
        gate_after_ms: how long the model must have heard clear silence first (a state held after
            a few frames from a fresh start hears the next onset late).
        gate_above_floor_db: a frame less than this above the channel's noise floor may be held
            too, however loud the floor; None: only frames under ``gate_dbfs``. The floor follows
            the quietest frames: it falls to any quieter frame at once and rises by
            ``FLOOR_RISE_DB_S``.
    """

    def __init__(self, model: Model, channels: int = 2, gate_dbfs: float | None = None,
                 gate_max_prob: float = 0.05, gate_after_ms: float = 500.0,
                 gate_above_floor_db: float | None = None) -> None:
        self.model = model
        self.channels = channels
        self.gate_dbfs = gate_dbfs
        self.gate_max_prob = gate_max_prob
        self._gate_after = max(1, round(gate_after_ms / 1000.0 * RATE_HZ / FRAME_SAMPLES))
        self._gate_power = None if gate_dbfs is None else 10 ** (gate_dbfs / 10)
        self._above_floor = None if gate_above_floor_db is None or gate_dbfs is None \
            else 10 ** (gate_above_floor_db / 10)
        self._floor_rise = 10 ** (FLOOR_RISE_DB_S * FRAME_SAMPLES / RATE_HZ / 10)
        # the published ONNX file takes the sample rate; the converted TFLite file is 16 kHz only
        self._sr = {"sr": np.array(RATE_HZ, dtype=np.int64)} if "sr" in model.input_names else {}
        self.gated = 0
        self.reset()

    def reset(self) -> None:
        """Clear the recurrent state and context of every channel."""
        self._state = np.zeros((STATE_SHAPE[0], self.channels, STATE_SHAPE[1]), dtype=np.float32)
        self._context = np.zeros((self.channels, CONTEXT_SAMPLES), dtype=np.float32)
        self._last = np.zeros(self.channels, dtype=np.float32)
        self._quiet = [0] * self.channels
        """Per channel, frames in a row the model scored under ``gate_max_prob``."""
        first = math.inf if self._above_floor is not None else (self._gate_power or 0.0)
        self._hold_below = [first] * self.channels
        """Per channel, the mean power per sample (full scale 1.0) under which a frame may be held:
        the fixed gate's, or a little over the channel's noise floor (the first frame sets it)."""

    def replay(self, channel: int, rows: Sequence[np.ndarray]) -> float:
        """Start one channel afresh and run it over ``rows``, its last frames (oldest first); the
        other channels are left as they are.

        After seconds of music or a tone, the state the model built on it hears the next voice
        late or not at all (EmoDB sentences after 10 s of hold music: 12 % of their speech frames
        scored as speech, against 87 % from a fresh state); started afresh from where the music
        ended, it hears them. Starting afresh later, on speech already under way, does not help.

        Args:
            channel: the row to start afresh.
            rows: its frames since the new sound began, FRAME_SAMPLES samples each at 16 kHz.

        Returns:
            The channel's speech probability after the last row (0.0 with no rows).
        """
        self._state[:, channel] = 0.0
        self._context[channel] = 0.0
        self._last[channel] = 0.0
        self._quiet[channel] = 0
        only = np.arange(self.channels) == channel
        x = np.zeros((self.channels, CONTEXT_SAMPLES + FRAME_SAMPLES), dtype=np.float32)
        for row in rows:
            x[channel, :CONTEXT_SAMPLES] = self._context[channel]
            x[channel, CONTEXT_SAMPLES:] = row
            self._context[channel] = x[channel, -CONTEXT_SAMPLES:]
            self._run(x, only)
        return float(self._last[channel])

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
            return self._run(x, None)
        # plain floats per channel: numpy's per-call overhead would cost more than the test
        power = (np.add.reduce(frame.samples * frame.samples, axis=1) / FRAME_SAMPLES).tolist()
        if self._above_floor is not None:
            # the floor falls to a quieter frame at once and rises slowly; the limit never goes
            # under the fixed gate's (after digital silence, a mute, it climbs from there)
            m, rise, g = self._above_floor, self._floor_rise, self._gate_power
            self._hold_below = [max(min(p * m, b * rise), g)
                                for p, b in zip(power, self._hold_below, strict=True)]
        if max(self._quiet) < self._gate_after:
            return self._run(x, None)  # no channel has been in clear silence long enough
        held = [p < b and q >= self._gate_after
                for p, b, q in zip(power, self._hold_below, self._quiet, strict=True)]
        if True not in held:
            return self._run(x, None)
        self.gated += sum(held)
        if False not in held:
            return self._last.copy()
        return self._run(x, np.array([not h for h in held]))

    def _run(self, x: np.ndarray, loud: np.ndarray | None) -> np.ndarray:
        """Run the whole batch; only the ``loud`` rows (all when None) take the new state and
        probability (LiteRT reallocates its tensors for every new batch size)."""
        out = self.model.run({"input": x, "state": self._state, **self._sr})
        prob = np.asarray(out["output"][:, 0], dtype=np.float32)
        if loud is None:
            self._state, self._last = out["stateN"], prob
        else:
            self._state[:, loud] = out["stateN"][:, loud]
            self._last[loud] = prob[loud]
        if self._gate_power is not None:  # a held row's probability stays in clear silence
            top = self.gate_max_prob
            self._quiet = [q + 1 if p < top else 0
                           for q, p in zip(self._quiet, self._last.tolist(), strict=True)]
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


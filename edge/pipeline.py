"""The one place that wires the edge stages: frames -> VAD -> speech gates -> conversation window.

:class:`Pipeline` does no I/O: it takes two-channel blocks and returns the messages to publish
(bodies without header; the box adds site, box, seq and ts). :func:`analyze` runs it offline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edge.conversation import MetricsWindow
from edge.frames import FRAME_S, Framer
from edge.runtime import Model, load_model
from edge.vad import GateConfig, SileroVad, SpeechGate

CHANNELS = ("near", "far")


@dataclass
class Message:
    """A message body the pipeline wants published, and its wire kind."""

    kind: str
    body: dict[str, Any]


@dataclass
class Trace:
    """Per-frame probabilities and speech segments, kept only for offline analysis."""

    prob: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in CHANNELS})
    segments: dict[str, list[list[float]]] = field(default_factory=lambda: {c: [] for c in CHANNELS})


def load_vad_model(backend: str = "onnx") -> Model:
    """Load the checksum-verified Silero VAD model."""
    from models.build import model_path

    return load_model(model_path("silero_vad"), backend=backend)


class Pipeline:
    """Runs every stage on two-channel audio; returns metrics and events, never audio.

    Args:
        model: the Silero VAD model (see :func:`load_vad_model`).
        gate: hysteresis of the speech gates.
        window_s: length of a metrics window, seconds.
        trace: keep per-frame probabilities and segments (offline analysis only).
    """

    def __init__(self, model: Model, gate: GateConfig = GateConfig(), window_s: float = 1.0,
                 trace: bool = False) -> None:
        self.framer = Framer()
        self.vad = SileroVad(model)
        self.gates = {c: SpeechGate(gate) for c in CHANNELS}
        self.window = MetricsWindow(window_s)
        self.trace = Trace() if trace else None
        self._open: dict[str, float | None] = {c: None for c in CHANNELS}
        self.audio_s = 0.0

    def reset(self) -> None:
        """Start a new stream: every stage back to its initial state."""
        self.framer.reset()
        self.vad.reset()
        for gate in self.gates.values():
            gate.reset()
        self.window.reset()
        self._open = {c: None for c in CHANNELS}
        self.audio_s = 0.0

    def __call__(self, block: np.ndarray) -> list[Message]:
        """Process a (2, n) float32 block at 16 kHz; return the messages it produced."""
        out: list[Message] = []
        for frame in self.framer(block):
            probs = self.vad(frame)
            for ch, prob in zip(CHANNELS, probs, strict=True):
                gate = self.gates[ch]
                change = gate(float(prob), frame.start_s)
                if self.trace is not None:
                    self.trace.prob[ch].append(round(float(prob), 4))
                if change is not None:
                    name = "speech_start" if change == "start" else "speech_end"
                    out.append(Message("event", {"name": name, "channel": ch,
                                                 "t_audio_s": round(gate.transition_s, 3)}))
                    self._segment(ch, change, gate.transition_s)
            window = self.window(frame.start_s, frame.duration_s,
                                 self.gates["near"].speaking, self.gates["far"].speaking)
            if window is not None:
                out.append(Message("metrics", asdict(window)))
            self.audio_s = frame.start_s + FRAME_S
        return out

    def _segment(self, ch: str, change: str, t_s: float) -> None:
        if change == "start":
            self._open[ch] = t_s
            return
        start = self._open[ch]
        self._open[ch] = None
        if self.trace is not None and start is not None:
            self.trace.segments[ch].append([round(start, 3), round(t_s, 3)])

    def finish(self) -> None:
        """Close segments still open at the end of the stream (offline analysis)."""
        for ch in CHANNELS:
            if self._open[ch] is not None:
                self._segment(ch, "end", self.audio_s)


def analyze(audio: np.ndarray, model: Model, *, window_s: float = 1.0) -> dict[str, Any]:
    """Run the pipeline over a whole two-channel recording and summarise it.

    Args:
        audio: (2, n) float32 samples at 16 kHz, near first.
        model: the Silero VAD model.
        window_s: metrics window, seconds.

    Returns:
        A JSON-ready dict: per-call metrics, VAD probabilities at 32 ms steps, speech segments.
    """
    pipe = Pipeline(model, window_s=window_s, trace=True)
    messages = pipe(audio)
    pipe.finish()
    assert pipe.trace is not None
    duration_s = audio.shape[1] / 16000
    speech_s = {c: sum(e - s for s, e in pipe.trace.segments[c]) for c in CHANNELS}
    metrics = [m.body for m in messages if m.kind == "metrics"]
    return {
        "duration_s": round(duration_s, 3),
        "frame_s": FRAME_S,
        "call": {
            f"{c}_speech_ratio": round(speech_s[c] / duration_s, 4) if duration_s else 0.0
            for c in CHANNELS
        },
        "metrics": metrics,
        "vad": {c: {"prob": pipe.trace.prob[c], "segments": pipe.trace.segments[c]}
                for c in CHANNELS},
    }

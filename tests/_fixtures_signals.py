"""Two-channel test calls built from real EmoDB utterances, with injected posture events and truth.

The agent (near) is speaker 08 reading in a neutral voice (the call-centre script register); the
prospect (far) is speaker 03, mixed emotions. Clips are trimmed of their leading and trailing
silence so the builder controls every gap, and both channels get a quiet real noise floor (a live
headset and line are never digitally silent; digital silence means mute). Injected events: a 45 s
agent monologue, three agent interruptions (the agent starts over a prospect's held turn and the
prospect gives up 1 s later), a 3 s response gap, and a stretch of agent speech at 1.3x tempo made
with ``sox tempo``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests._fixtures_fatigue import RATE_HZ, noise_floor, read_wav, sox

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
AGENT, PROSPECT = "08", "03"


def trim(x: np.ndarray, floor_dbfs: float = -45.0) -> np.ndarray:
    """Cut leading and trailing 10 ms frames quieter than ``floor_dbfs``."""
    n = len(x) // 160
    level = 10 * np.log10(np.mean(x[: n * 160].reshape(n, 160) ** 2, axis=1) + 1e-12)
    loud = np.nonzero(level > floor_dbfs)[0]
    return x[loud[0] * 160:(loud[-1] + 1) * 160] if len(loud) else x


def clips(speaker: str, emotions: str = "") -> list[np.ndarray]:
    """Trimmed clips of one EmoDB speaker (optionally only the given emotion letters)."""
    paths = sorted((SHARED / "emodb" / "wav").glob(f"{speaker}*.wav"))
    return [trim(read_wav(p)) for p in paths if not emotions or p.stem[5] in emotions]


def flatten_pitch(x: np.ndarray) -> np.ndarray:
    """``x`` (16 kHz) with its pitch held at its median by Praat's PSOLA (parselmouth, test-only):
    the same words, timing and loudness, on one note (pitch range about 0.1 semitone)."""
    import parselmouth
    from parselmouth.praat import call

    snd = parselmouth.Sound(x.astype(np.float64), sampling_frequency=RATE_HZ)
    manipulation = call(snd, "To Manipulation", 0.01, 75, 600)
    pitch = snd.to_pitch_ac(time_step=0.01, pitch_floor=75, pitch_ceiling=600)
    tier = call("Create PitchTier", "flat", 0, snd.duration)
    call(tier, "Add point", snd.duration / 2, call(pitch, "Get quantile", 0, 0, 0.5, "Hertz"))
    call([tier, manipulation], "Replace pitch tier")
    out = call(manipulation, "Get resynthesis (overlap-add)")
    return np.asarray(out.values[0], dtype=np.float32)[: len(x)]


@dataclass
class Truth:
    """An injected event: the cue expected, when it becomes true, and when it ends."""

    cue: str
    onset_s: float
    end_s: float


def match_cues(truth: list[Truth], cues: list[dict], late_s: float = 3.0) -> tuple[dict[int, float], int]:
    """Detection delay per injected event (its first cue of the same kind from 1 s before onset to
    ``late_s`` after its end), and how many cues are true: those that detect an event not detected
    yet (a second cue for the same event is nagging, counted false)."""
    delays: dict[int, float] = {}
    true_cues = 0
    for c in cues:
        hit = [i for i, t in enumerate(truth) if i not in delays
               and t.cue == c["cue"] and t.onset_s - 1.0 <= c["start_s"] <= t.end_s + late_s]
        true_cues += bool(hit)
        for i in hit:
            delays[i] = c["start_s"] - truth[i].onset_s
    return delays, true_cues


@dataclass
class Call:
    """A built call: (2, n) audio at 16 kHz and the injected events."""

    audio: np.ndarray
    truth: list[Truth] = field(default_factory=list)


class Builder:
    """Places agent and prospect utterances on a timeline."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.agent = clips(AGENT, "N")
        self.prospect = clips(PROSPECT)
        self.chunks: list[tuple[int, float, np.ndarray]] = []
        self.t = 0.5
        self.truth: list[Truth] = []
        self._stretched: dict[tuple[int, float], np.ndarray] = {}

    def _pick(self, pool: list[np.ndarray]) -> np.ndarray:
        return pool[self.rng.randrange(len(pool))]

    def say(self, ch: int, n: int, gap_s: float = 0.25, tempo: float = 1.0) -> float:
        """``n`` clips by the agent (0) or the prospect (1) from ``self.t``; return the end time."""
        t = self.t
        for _ in range(n):
            x = self._pick(self.agent if ch == 0 else self.prospect)
            if tempo != 1.0:
                key = (id(x), tempo)
                if key not in self._stretched:
                    self._stretched[key] = sox(x, "tempo", "-s", str(tempo))
                x = self._stretched[key]
            self.chunks.append((ch, t, x))
            t += len(x) / RATE_HZ + gap_s
        self.t = t - gap_s
        return self.t

    def pause(self, s: float) -> None:
        self.t += s

    def opening(self, turns: int) -> None:
        """The prospect picks up, then ``turns`` normal exchanges."""
        self.say(1, 1)
        self.pause(0.5)
        self.exchange(turns)

    def closing(self) -> None:
        """The prospect's last words, then the agent's: the agent speaks last."""
        self.say(1, 1)
        self.pause(0.5)
        self.say(0, 2)

    def exchange(self, turns: int) -> None:
        """Normal turn taking: prospect 1-2 clips, agent 2-3 clips, gaps of 0.3-0.9 s."""
        for _ in range(turns):
            self.say(1, self.rng.randint(1, 2))
            self.pause(self.rng.uniform(0.3, 0.9))
            self.say(0, self.rng.randint(2, 3))
            self.pause(self.rng.uniform(0.3, 0.9))

    def interruption(self) -> None:
        """The agent starts 2.5 s into a prospect's turn; the prospect stops 1 s later."""
        start = self.t
        self.say(1, 4, gap_s=0.0)
        onset = start + 2.5
        cut = onset + 1.0
        self.chunks = [(ch, t, x if ch == 0 or t + len(x) / RATE_HZ <= cut or t < start
                        else x[: max(0, int((cut - t) * RATE_HZ))]) for ch, t, x in self.chunks]
        self.t = onset
        end = self.say(0, 3)
        self.truth.append(Truth("talking_over", onset, end))
        self.pause(0.6)

    def monologue(self, seconds: float = 45.0, on_s: float = 30.0) -> None:
        self.say(1, 1)
        self.pause(0.6)
        start = self.t
        while self.t - start < seconds - 1.0:
            self.say(0, 1)
            self.pause(0.3)
        self.truth.append(Truth("monologue", start + on_s, self.t))
        self.pause(0.6)

    def response_gap(self, gap_s: float = 3.0) -> None:
        end = self.say(1, 2)
        self.pause(gap_s)
        self.truth.append(Truth("slow_response", end, end + gap_s))
        self.say(0, 2)
        self.pause(0.6)

    def stretch(self, cue: str, turns: int, tempo: float = 1.0,
                change: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        """An injected ``cue`` event: ``turns`` agent turns of three clips (at ``tempo``, through
        ``change``), the prospect's one-clip replies between them."""
        start, first = self.t, len(self.chunks)
        for i in range(turns):
            self.say(0, 3, tempo=tempo)
            if i < turns - 1:
                self.pause(0.5)
                self.say(1, 1)
                self.pause(0.5)
        if change is not None:
            self.chunks[first:] = [(ch, t, change(x) if ch == 0 else x) for ch, t, x in self.chunks[first:]]
        self.truth.append(Truth(cue, start, self.t))
        self.pause(0.6)

    def fast_stretch(self, turns: int = 3) -> None:
        """The agent rushes: 1.3x tempo (``sox tempo``)."""
        self.stretch("too_fast", turns, tempo=1.3)

    def slow_stretch(self, turns: int = 4, tempo: float = 0.7) -> None:
        """The agent drags: 0.7x tempo."""
        self.stretch("too_slow", turns, tempo=tempo)

    def monotone_stretch(self, turns: int = 6, flat: bool = True) -> None:
        """The agent reads on one note (:func:`flatten_pitch`); ``flat=False`` keeps the clips
        as recorded."""
        self.stretch("monotone", turns, change=flatten_pitch if flat else None)

    def quiet_stretch(self, turns: int = 5, drop_db: float = 10.0) -> None:
        """The agent's voice drops by ``drop_db`` (tired, or the microphone slipped)."""
        gain = 10.0 ** (-drop_db / 20.0)
        self.stretch("low_energy", turns, change=lambda x: x * gain)

    def build(self, tail_s: float = 1.0) -> Call:
        n = int((self.t + tail_s) * RATE_HZ)
        audio = np.zeros((2, n), dtype=np.float32)
        for ch, t, x in self.chunks:
            i = int(t * RATE_HZ)
            audio[ch, i:i + len(x)] += x[: n - i]
        audio[0] += noise_floor(n, -62.0, seed=1)
        audio[1] += noise_floor(n, -60.0, seed=2)
        return Call(audio, self.truth)


def clean_call(seed: int = 4) -> Call:
    """About 6 minutes: normal exchanges around every injected event; the agent speaks last."""
    b = Builder(seed)
    b.opening(10)
    b.interruption()
    b.exchange(3)
    b.monologue()
    b.exchange(3)
    b.interruption()
    b.exchange(3)
    b.response_gap()
    b.exchange(3)
    b.fast_stretch()
    b.exchange(3)
    b.interruption()
    b.exchange(3)
    b.closing()
    return b.build()


def slow_call(seed: int = 6) -> Call:
    """About 4 minutes: normal exchanges (the agent's baseline), 45 s at 0.7x tempo, more
    exchanges; the agent speaks last."""
    b = Builder(seed)
    b.opening(14)
    b.slow_stretch()
    b.exchange(3)
    b.closing()
    return b.build()


def steady_call(seed: int = 5, turns: int = 55) -> Call:
    """About 10 minutes of normal turn taking, nothing injected; the agent speaks last."""
    b = Builder(seed)
    b.opening(turns)
    return b.build()


@pytest.fixture(scope="session")
def cue_calls() -> dict[str, Call]:
    """The clean call with injected events and the steady call, built once."""
    return {"clean": clean_call(), "steady": steady_call()}

"""Far-end classifier: accuracy on a built timeline and cost per second of audio.

The timeline mixes real speech (EmoDB, an AMI headset, MFA clips) with call-progress tones, beeps and
hold music that this module synthesises, band-limited to the telephone band (300-3400 Hz) over a real
pink-noise floor, so that the truth of every frame is known by construction. Run
``python -m bench.farend --json`` for the figures; ``tests/test_farend.py`` asserts on them.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.common import SHARED as DATA
from bench.common import read_wav
from edge.farend import (
    BEEP,
    BUSY,
    DEAD,
    MUSIC,
    RINGBACK,
    SILENCE,
    SPEECH,
    VETO_CLASSES,
    FarEnd,
    frame_labels,
)
from edge.frames import FRAME_S, FRAME_SAMPLES, RATE_HZ

IGNORE = "ignore"
NON_SPEECH = (RINGBACK, BUSY, BEEP, MUSIC)
NOISES = ("doing_the_dishes", "running_tap", "exercise_bike", "dude_miaowing", "pink_noise",
          "white_noise")


def scale_to(x: np.ndarray, dbfs: float) -> np.ndarray:
    """Scale ``x`` so that its RMS over its active (top-30 dB) 32 ms frames is ``dbfs``."""
    n = len(x) // FRAME_SAMPLES * FRAME_SAMPLES
    fr = x[:n].reshape(-1, FRAME_SAMPLES).astype(np.float64)
    e = np.mean(fr ** 2, axis=1)
    active = e > e.max() * 1e-3
    level = 10 * np.log10(np.mean(e[active]) + 1e-20)
    return (x * 10 ** ((dbfs - level) / 20)).astype(np.float32)


def band_limit(x: np.ndarray, lo_hz: float = 300.0, hi_hz: float = 3400.0) -> np.ndarray:
    """Telephone band: FFT mask with 50 Hz cosine edges."""
    spec = np.fft.rfft(x.astype(np.float64))
    f = np.fft.rfftfreq(len(x), 1 / RATE_HZ)
    gain = np.clip((f - (lo_hz - 50)) / 100, 0, 1) * np.clip(((hi_hz + 50) - f) / 100, 0, 1)
    gain = 0.5 - 0.5 * np.cos(np.pi * gain)
    return np.fft.irfft(spec * gain, len(x)).astype(np.float32)


def tone(freqs_hz: tuple[float, ...], seconds: float, dbfs: float = -20.0) -> np.ndarray:
    """Sum of sines at ``freqs_hz`` with 5 ms ramps, RMS ``dbfs``."""
    t = np.arange(round(seconds * RATE_HZ)) / RATE_HZ
    rng = np.random.default_rng(int(sum(freqs_hz) * 100 + seconds * 10))
    x = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in freqs_hz)
    x = np.asarray(x, dtype=np.float64)
    ramp = min(len(x) // 2, int(0.005 * RATE_HZ))
    if ramp:
        env = np.ones(len(x))
        env[:ramp] = np.linspace(0, 1, ramp)
        env[-ramp:] = np.linspace(1, 0, ramp)
        x *= env
    return (x / np.sqrt(np.mean(x ** 2)) * 10 ** (dbfs / 20)).astype(np.float32)


def cadence(freqs_hz: tuple[float, ...], pattern_s: tuple[float, ...], cycles: int,
            dbfs: float = -20.0) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """On/off tone cadence (``pattern_s`` alternates on and off); returns audio and the on spans."""
    parts, spans, t = [], [], 0.0
    for _ in range(cycles):
        for k, d in enumerate(pattern_s):
            if k % 2 == 0:
                parts.append(tone(freqs_hz, d, dbfs))
                spans.append((t, t + d))
            else:
                parts.append(np.zeros(round(d * RATE_HZ), np.float32))
            t += d
    return np.concatenate(parts), spans


def _note(f0_hz: float, seconds: float, piano: bool, rng: np.random.Generator) -> np.ndarray:
    n = round(seconds * RATE_HZ)
    t = np.arange(n) / RATE_HZ
    x = np.zeros(n)
    for h in range(1, 9):
        if h * f0_hz > 3800:
            break
        x += np.sin(2 * np.pi * h * f0_hz * t + rng.uniform(0, 2 * np.pi)) / h ** 1.2
    a, d, s, r = 0.015, 0.1, 0.6, 0.06
    env = np.full(n, s)
    na, nd, nr = int(a * RATE_HZ), int(d * RATE_HZ), int(r * RATE_HZ)
    env[:na] = np.linspace(0, 1, na)
    env[na:na + nd] = np.linspace(1, s, len(env[na:na + nd]))
    env[-nr:] *= np.linspace(1, 0, nr)
    if piano:
        env *= np.exp(-t / 0.6)
    return x * env


def melody(seconds: float, seed: int, two_voices: bool = True, piano: bool = False,
           dbfs: float = -20.0) -> np.ndarray:
    """Hold music: a random tune on a major scale with ADSR harmonic notes, optional bass voice."""
    rng = np.random.default_rng(seed)
    scale = [0, 2, 4, 5, 7, 9, 11, 12, 14, 16]
    root = 261.63 * 2 ** (rng.integers(-3, 4) / 12)
    n = round(seconds * RATE_HZ)
    out = np.zeros(n)
    t = 0.0
    while t < seconds:
        d = float(rng.choice([0.25, 0.375, 0.5, 0.75]))
        f = root * 2 ** (scale[int(rng.integers(len(scale)))] / 12)
        i = int(t * RATE_HZ)
        note = _note(f, d, piano, rng)[: n - i]
        out[i:i + len(note)] += note
        t += d
    if two_voices:
        t = 0.0
        while t < seconds:
            f = root / 2 * 2 ** (scale[int(rng.choice([0, 3, 4, 5]))] / 12)
            i = int(t * RATE_HZ)
            note = 0.6 * _note(f, 1.0, piano, rng)[: n - i]
            out[i:i + len(note)] += note
            t += 1.0
    return (out / np.sqrt(np.mean(out ** 2)) * 10 ** (dbfs / 20)).astype(np.float32)


def _emodb_span(name: str) -> tuple[float, float]:
    """Speech span of an EmoDB clip from its ``lablaut`` phone labels, capped at 2.0 s."""
    lab = DATA / "emodb" / "lablaut" / (name[:7] + "xx.lablaut")
    times, marks = [], []
    body = lab.read_text(encoding="latin-1").split("#", 1)[1]
    for line in body.splitlines():
        f = line.split()
        if len(f) >= 3:
            times.append(float(f[0]))
            marks.append(f[2])
    end = next((t for t, m in zip(times, marks, strict=True) if m == "."), times[-1])
    return min(times[0], 2.0), min(end, 2.0)


def _energy_truth(x: np.ndarray) -> np.ndarray:
    """Speech mask of a clean close-talk clip: frames within 35 dB of its loudest, dilated 0.2 s."""
    n = len(x) // FRAME_SAMPLES
    e = np.mean(x[: n * FRAME_SAMPLES].reshape(n, -1).astype(np.float64) ** 2, axis=1)
    on = e > e.max() * 10 ** -3.5
    k = int(0.2 / FRAME_S)
    dil = np.convolve(on.astype(float), np.ones(2 * k + 1), mode="same") > 0
    return np.repeat(dil, FRAME_SAMPLES)


@functools.cache
def _headset_with_speaker() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """AMI headset ``source0`` and the RTTM turns of the speaker it records (matched by energy)."""
    x = read_wav(DATA / "ami-headsets" / "source0.wav")
    turns: dict[str, list[tuple[float, float]]] = {}
    for line in (DATA / "ami-headsets" / "mixture.rttm").read_text().splitlines():
        f = line.split()
        turns.setdefault(f[7], []).append((float(f[3]), float(f[3]) + float(f[4])))
    n = len(x) // FRAME_SAMPLES
    e = np.log10(np.mean(x[: n * FRAME_SAMPLES].reshape(n, -1) ** 2, axis=1) + 1e-10)
    centre = (np.arange(n) + 0.5) * FRAME_S

    def score(spk: str) -> float:
        m = np.zeros(n, bool)
        for s, t in turns[spk]:
            m |= (centre >= s) & (centre < t)
        return float(e[m].mean() - e[~m].mean()) if m.any() and (~m).any() else -1e9

    best = max(turns, key=score)
    return x, turns[best]


@dataclass
class Timeline:
    """A built far-channel recording and its per-sample truth."""

    audio: list[np.ndarray] = field(default_factory=list)
    """The recording's pieces, in order (float32 at :data:`RATE_HZ`)."""
    truth: list[np.ndarray] = field(default_factory=list)
    """Each piece's label of every sample."""
    events: list[tuple[float, str]] = field(default_factory=list)
    """(start_s, label) of every tone and music event."""

    @property
    def t_s(self) -> float:
        """Length of the recording so far, seconds: where the next piece starts."""
        return sum(len(a) for a in self.audio) / RATE_HZ

    def add(self, x: np.ndarray, label: str | np.ndarray, event: str | None = None) -> None:
        """Append ``x`` with its truth (one label, or one per sample), and ``event`` at its start."""
        if event is not None:
            self.events.append((self.t_s, event))
        self.audio.append(x.astype(np.float32))
        if isinstance(label, str):
            self.truth.append(np.full(len(x), label, dtype=object))
        else:
            self.truth.append(label)

    def silence(self, seconds: float, label: str = SILENCE) -> None:
        """Append ``seconds`` of digital silence labelled ``label``."""
        self.add(np.zeros(round(seconds * RATE_HZ), np.float32), label)

    def cadence(self, freqs_hz: tuple[float, ...], pattern_s: tuple[float, ...], cycles: int,
                label: str, tail_s: float) -> None:
        """Tone cadence, its off periods labelled as the tone, ``tail_s`` of its last off kept."""
        x, _ = cadence(freqs_hz, pattern_s, cycles)
        x = x[: len(x) - round((pattern_s[-1] - tail_s) * RATE_HZ)]
        self.add(x, label, event=label)

    def speech(self, x: np.ndarray, mask: np.ndarray, gap_label: str = IGNORE) -> None:
        """Append speech scaled to -26 dBFS: labelled speech where ``mask`` is set, ``gap_label``
        elsewhere (past the mask's end too)."""
        m = np.zeros(len(x), bool)
        m[: min(len(x), len(mask))] = mask[: len(x)]
        lab = np.where(m, SPEECH, gap_label).astype(object)
        self.add(scale_to(x, -26.0), lab)

    def build(self, noise_dbfs: float = -55.0) -> tuple[np.ndarray, np.ndarray]:
        """Band-limited mix over a pink-noise floor; per-sample truth (``dead`` kept exactly 0)."""
        x = np.concatenate(self.audio)
        truth = np.concatenate(self.truth)
        noise = read_wav(DATA / "noise" / "pink_noise.wav")
        noise = np.resize(noise, len(x))
        noise = noise / np.sqrt(np.mean(noise.astype(np.float64) ** 2)) * 10 ** (noise_dbfs / 20)
        y = band_limit(x + noise)
        y[truth == DEAD] = 0.0
        return y.astype(np.float32), truth


def build_call_timeline() -> tuple[np.ndarray, np.ndarray, list[tuple[float, str]]]:
    """Far channel of a morning of calls: tones, beeps, hold music and real speech (about 150 s)."""
    tl = Timeline()
    tl.silence(1.0)
    # French ringback, answered 1 s into the third off period
    tl.cadence((440.0,), (1.5, 3.5), 3, RINGBACK, tail_s=1.0)
    names = sorted(p.name for p in (DATA / "emodb" / "wav").glob("*.wav"))[5::47][:6]
    for name in names:
        x = read_wav(DATA / "emodb" / "wav" / name)
        s, e = _emodb_span(name)
        x = x[int(s * RATE_HZ):int(e * RATE_HZ)]
        tl.speech(x, np.ones(len(x), bool))
        tl.silence(0.3, IGNORE)
    tl.silence(1.0)
    tl.add(melody(15.0, seed=1), MUSIC, event=MUSIC)
    tl.silence(0.5, IGNORE)  # a pause in hold music or its end: ambiguous
    hx, turns = _headset_with_speaker()
    seg = hx[int(5 * RATE_HZ):int(20 * RATE_HZ)]
    centre = 5 + np.arange(len(seg)) / RATE_HZ
    mask = np.zeros(len(seg), bool)
    for s, t in turns:
        mask |= (centre >= s) & (centre < t)
    tl.speech(seg, mask)
    tl.silence(1.0)
    # voicemail greeting then its beep
    for clip in ("english_slow", "61-70968-0000"):
        x = read_wav(DATA / "mfa" / f"{clip}.wav")
        tl.speech(x, _energy_truth(x))
    tl.silence(0.5)
    tl.add(tone((1000.0,), 0.5), BEEP, event=BEEP)
    tl.silence(2.0)
    tl.cadence((440.0,), (0.5, 0.5), 6, BUSY, tail_s=0.5)
    tl.silence(1.0, IGNORE)  # the stage cannot know yet that the cadence is over
    tl.silence(1.0)
    # ETSI ringback (425 Hz, 1 s on 4 s off), answered
    tl.cadence((425.0,), (1.0, 4.0), 2, RINGBACK, tail_s=1.5)
    x = read_wav(DATA / "mfa" / "english_fast.wav")
    tl.speech(x, _energy_truth(x))
    tl.silence(1.0)
    tl.add(melody(12.0, seed=2, two_voices=False, piano=True), MUSIC, event=MUSIC)
    tl.silence(1.0, IGNORE)
    # UK ringback (400+450 Hz, 0.4 on 0.2 off 0.4 on 2.0 off)
    tl.cadence((400.0, 450.0), (0.4, 0.2, 0.4, 2.0), 2, RINGBACK, tail_s=1.0)
    tl.silence(1.0, IGNORE)
    # US ringback (440+480 Hz, 2 s on 4 s off)
    tl.cadence((440.0, 480.0), (2.0, 4.0), 1, RINGBACK, tail_s=1.0)
    tl.silence(1.0, IGNORE)
    # SIT (three rising tones) then a dead line
    for f in (913.8, 1370.6, 1776.7):
        tl.add(tone((f,), 0.33), BEEP, event=BEEP if f < 1000 else None)
    tl.silence(1.0)
    tl.silence(2.0, DEAD)
    tl.silence(1.0, IGNORE)
    for name in names[:3]:
        x = read_wav(DATA / "emodb" / "wav" / name)
        s, e = _emodb_span(name)
        tl.silence(s, IGNORE)
        tl.speech(x[int(s * RATE_HZ):int(e * RATE_HZ)], np.ones(int(e * RATE_HZ) - int(s * RATE_HZ), bool))
        tl.silence(2.0 - e, IGNORE)
    x, truth = tl.build()
    return x, truth, tl.events


def frame_truth(truth: np.ndarray) -> list[str]:
    """Label of each 32 ms frame: the samples' common label, ``ignore`` if the frame is mixed."""
    out = []
    for j in range(len(truth) // FRAME_SAMPLES):
        seg = truth[j * FRAME_SAMPLES:(j + 1) * FRAME_SAMPLES]
        out.append(seg[0] if seg[0] == seg[-1] else IGNORE)
    return out


def live_labels(x: np.ndarray) -> list[str]:
    """Label the live stage returns after each frame (no back-dating)."""
    stage = FarEnd()
    return [stage(x[j * FRAME_SAMPLES:(j + 1) * FRAME_SAMPLES])
            for j in range(len(x) // FRAME_SAMPLES)]


def score(labels: list[str], truth: list[str]) -> dict[str, Any]:
    """Per-class accuracy, the veto leak (non-speech called speech), the speech lost to any other
    class and the speech lost to a veto class (silence excluded: it vetoes nothing)."""
    per: dict[str, list[int]] = {}
    for lab, tru in zip(labels, truth, strict=False):
        if tru == IGNORE:
            continue
        per.setdefault(tru, [0, 0])
        per[tru][0] += lab == tru
        per[tru][1] += 1
    non = [(lab, tru) for lab, tru in zip(labels, truth, strict=False) if tru in NON_SPEECH]
    sp = [lab for lab, tru in zip(labels, truth, strict=False) if tru == SPEECH]
    return {
        "accuracy": {k: round(v[0] / v[1], 4) for k, v in sorted(per.items())},
        "frames": {k: v[1] for k, v in sorted(per.items())},
        "nonspeech_as_speech": round(sum(lab == SPEECH for lab, _ in non) / max(1, len(non)), 4),
        "speech_lost": round(sum(lab != SPEECH for lab in sp) / max(1, len(sp)), 4),
        "speech_vetoed": round(sum(lab in VETO_CLASSES for lab in sp) / max(1, len(sp)), 4),
    }


def detection_latency(live: list[str], events: list[tuple[float, str]]) -> list[dict[str, Any]]:
    """Seconds from each event's start until the live label first shows its class."""
    out = []
    for start_s, label in events:
        j0 = int(np.ceil(start_s / FRAME_S))
        hit = next((j for j in range(j0, min(len(live), j0 + int(5 / FRAME_S)))
                    if live[j] == label), None)
        out.append({"t_s": round(start_s, 2), "label": label,
                    "latency_s": None if hit is None else round((hit + 1) * FRAME_S - start_s, 3)})
    return out


@functools.cache
def accuracy_figures() -> dict[str, Any]:
    """Offline and live accuracy on the call timeline, tone latencies, and the noise confusion."""
    x, truth, events = build_call_timeline()
    ft = frame_truth(truth)
    offline = frame_labels(x, RATE_HZ)
    live = live_labels(x)
    noise: dict[str, dict[str, float]] = {}
    for name in NOISES:
        n = scale_to(read_wav(DATA / "noise" / f"{name}.wav"), -26.0)
        labs = frame_labels(band_limit(n), RATE_HZ)
        noise[name] = {k: round(labs.count(k) / len(labs), 4) for k in sorted(set(labs))}
    return {
        "timeline_s": round(len(x) / RATE_HZ, 1),
        "offline": score(offline, ft),
        "live": score(live, ft),
        "latency": detection_latency(live, events),
        "noise": noise,
    }


def reference_vad() -> Any:
    """The cost baseline: the published fp32 Silero file on ONNX Runtime, one thread (the issue's
    0.0045 per channel), not the box's faster LiteRT file."""
    from edge.pipeline import load_vad_model

    return load_vad_model("onnx")


def cost_figures(seconds: float = 60.0, repeats: int = 5, with_vad: bool = True
                 ) -> dict[str, float]:
    """CPU milliseconds per second of audio of the live stage on speech and on tones.

    CPU time (``process_time``, median of ``repeats`` runs on one thread) rather than wall time, so
    that other processes on a shared machine do not inflate the figure, and the ratio to reference
    Silero VAD (fp32, one channel) timed in the same process on the same speech.
    """
    hx, _ = _headset_with_speaker()
    speech = np.resize(hx, int(seconds * RATE_HZ))
    tones, _ = cadence((440.0,), (1.5, 3.5), int(seconds / 5) + 1)
    out = {}
    for name, x in (("speech", speech), ("ringback", tones[: int(seconds * RATE_HZ)])):
        frames = [x[j * FRAME_SAMPLES:(j + 1) * FRAME_SAMPLES]
                  for j in range(len(x) // FRAME_SAMPLES)]
        times = []
        for _ in range(repeats):
            stage = FarEnd()
            t0 = time.process_time()
            for f in frames:
                stage(f)
            times.append(time.process_time() - t0)
        audio_s = len(frames) * FRAME_S
        med = statistics.median(times)
        out[f"ms_per_s_{name}"] = round(1000 * med / audio_s, 4)
        out[f"rtf_{name}"] = round(med / audio_s, 6)
    if with_vad:
        # baseline in the same process: reference Silero fp32 on one channel, same speech
        from edge.frames import Frame
        from edge.vad import SileroVad

        vad = SileroVad(reference_vad(), channels=1)
        vframes = [Frame(speech[j * FRAME_SAMPLES:(j + 1) * FRAME_SAMPLES][None, :], RATE_HZ, 0.0, j)
                   for j in range(len(speech) // FRAME_SAMPLES)]
        times = []
        for _ in range(repeats):
            vad.reset()
            t0 = time.process_time()
            for vf in vframes:
                vad(vf)
            times.append(time.process_time() - t0)
        vad_s = statistics.median(times) / (len(vframes) * FRAME_S)
        out["rtf_vad_one_channel"] = round(vad_s, 6)
        out["ratio_to_vad"] = round(out["rtf_speech"] / vad_s, 4)
        # scaled to the reference machine, where Silero fp32 costs 0.0045 per channel
        out["rtf_speech_at_reference"] = round(out["ratio_to_vad"] * 0.0045, 6)
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the far-end figures as JSON."""
    p = argparse.ArgumentParser(allow_abbrev=False, prog="python -m bench.farend", description=__doc__)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--cost-only", action="store_true", help="only the cost figures")
    args = p.parse_args(argv)
    figures: dict[str, Any] = {"cost": cost_figures()}
    if not args.cost_only:
        figures.update(accuracy_figures())
    print(json.dumps(figures, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

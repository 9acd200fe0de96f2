"""The line's analysis on telephone speech: EmoDB clips through a phone line, against the clean clips.

A prospect is heard through a phone line: band-limited to 300-3400 Hz (a male voice's fundamental
is gone), 8 kHz, G.711 A-law or mu-law, then resampled to 16 kHz by the box (soxr, as
:mod:`edge.capture` does for an 8 kHz device). Each EmoDB clip goes through sox (``sinc 300-3400``,
``-r 8000 -e a-law``, no dither, as a codec adds none), back to 16-bit samples, and through the same
soxr stream. The references are those of :mod:`bench.accuracy_prosody` on the CLEAN 16 kHz clip:
Praat's pitch, HNR, jitter and shimmer, and the ``silb`` syllable labels; the VAD is scored against
the ``lablaut`` speech spans (:func:`bench.accuracy_conversation.speech_span`) on a line built from
the clips with silences between them, run through the whole pipeline as the far channel.

Run ``python -m bench.telephone --json`` (every 3rd clip, 137, all 8 speakers; 24 s on 2026-11-29 on a
2-core AMD EPYC shared with other jobs, about 70 s on the slower machine; needs sox and parselmouth,
test-only references).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
from typing import Any

import numpy as np

from bench.accuracy_conversation import speech_span
from bench.accuracy_prosody import (
    EMODB,
    _hops,
    analyze_clip,
    clip_names,
    pitch_scores,
    praat_reference,
    read_wav,
    true_rate,
)
from edge.frames import RATE_HZ  # the EmoDB clips' rate too
from edge.prosody import HOP_S

log = logging.getLogger(__name__)

LINE_RATE_HZ = 8_000
"""Sample rate of a narrow-band telephone line (G.711)."""
CODECS = ("a-law", "u-law")
MALE_SPEAKERS = frozenset({"03", "10", "12", "15"})
LINE_FLOOR_DBFS = -65.0
"""The line's noise floor between the clips (before the codec)."""
IDLE_NOISE_DBFS = (-70.0, -78.0, -82.0, -86.0, -90.0)
"""Noise levels on an idle line for :func:`idle_line_figures`."""


def through_line(x: np.ndarray, codec: str) -> np.ndarray:
    """``x`` (16 kHz float) through a phone line: 300-3400 Hz, 8 kHz ``codec``, back at 16 kHz."""
    import soxr

    pcm = (np.clip(x, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    raw = ["-t", "raw", "-c", "1"]
    line = subprocess.run(["sox", "-V1", "-D", *raw, "-r", str(RATE_HZ), "-e", "signed", "-b", "16", "-",
                           *raw, "-r", str(LINE_RATE_HZ), "-e", codec, "-b", "8", "-", "sinc", "300-3400"],
                          input=pcm, capture_output=True, check=True).stdout
    decoded = subprocess.run(["sox", "-V1", *raw, "-r", str(LINE_RATE_HZ), "-e", codec, "-b", "8", "-",
                              *raw, "-e", "signed", "-b", "16", "-"],
                             input=line, capture_output=True, check=True).stdout
    y = (np.frombuffer(decoded, dtype="<i2").astype(np.float32) / 32768.0)[:, None]
    stream = soxr.ResampleStream(LINE_RATE_HZ, RATE_HZ, 1, dtype="float32", quality="HQ")  # as capture
    z = np.concatenate([stream.resample_chunk(y), stream.resample_chunk(y[:0], last=True)])[:, 0]
    return np.pad(z, (0, max(0, len(x) - len(z))))[:len(x)].astype(np.float32)


def _octave_hops(f0_hz: np.ndarray, voiced: np.ndarray, ref: dict[str, Any]) -> tuple[int, int]:
    """(hops voiced in both that read 1.7 times Praat's pitch or more, hops voiced in both)."""
    k = np.rint((ref["t_s"] - HOP_S / 2) / HOP_S).astype(int)
    ok = (k >= 0) & (k < len(f0_hz))
    k, pf = k[ok], ref["f0_hz"][ok]
    both = voiced[k] & (pf > 0)
    return int((f0_hz[k][both] >= 1.7 * pf[both]).sum()), int(both.sum())


def prosody_figures(names: list[str], codec: str | None) -> dict[str, Any]:
    """Pitch, voice quality and rate of the clips (through the line if ``codec``) against the clean
    references, men and women apart (the line takes a man's fundamental away)."""
    sums = {g: np.zeros(6, dtype=np.int64) for g in ("male", "female")}
    ours: dict[str, list[float]] = {"hnr": [], "jitter": [], "shimmer": [], "rate": []}
    ref_: dict[str, list[float]] = {k: [] for k in ours}
    funcs: dict[str, dict[str, list[float]]] = {g: {"range": [], "movement": []} for g in sums}
    for name in names:
        x = read_wav(EMODB / "wav" / name)
        y = x if codec is None else through_line(x, codec)
        ref = praat_reference(name)
        tr = _hops(y)
        g = "male" if name[:2] in MALE_SPEAKERS else "female"
        sums[g] += (*pitch_scores(tr.f0_hz, tr.voiced, ref), *_octave_hops(tr.f0_hz, tr.voiced, ref))
        out = analyze_clip(y, RATE_HZ)
        for key, mine, theirs in (("hnr", out["hnr_db"], ref["hnr_db"]),
                                  ("jitter", out["jitter_local"], ref["jitter"]),
                                  ("shimmer", out["shimmer_local"], ref["shimmer"]),
                                  ("rate", out["articulation_rate_syl_s"] or 0.0, true_rate(name))):
            if mine is not None and theirs is not None and np.isfinite(theirs):
                ours[key].append(mine)
                ref_[key].append(theirs)
        if out["pitch_range_st"] is not None:
            funcs[g]["range"].append(out["pitch_range_st"])
            funcs[g]["movement"].append(out["pitch_movement_st_per_s"])
    total = sums["male"] + sums["female"]
    figs: dict[str, Any] = {"pitch_gpe": total[0] / total[1], "pitch_voicing_agree": total[2] / total[3]}
    for g, s in sums.items():
        figs[f"pitch_gpe_{g}"] = s[0] / s[1]
        figs[f"pitch_voicing_agree_{g}"] = s[2] / s[3]
        figs[f"pitch_octave_up_{g}"] = s[4] / s[5]
        figs[f"pitch_range_st_median_{g}"] = float(np.median(funcs[g]["range"]))
        figs[f"pitch_movement_st_s_median_{g}"] = float(np.median(funcs[g]["movement"]))
    for key in ours:
        figs[f"{key}_r"] = float(np.corrcoef(ours[key], ref_[key])[0, 1])
    figs["rate_mean_syl_s"] = float(np.mean(ours["rate"]))
    figs["rate_mean_labels_syl_s"] = float(np.mean(ref_["rate"]))
    return figs


def build_line(names: list[str], seed: int = 0) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The clips one after the other with 0.6 to 1.6 s between them over a quiet floor, and their
    labelled speech spans (seconds)."""
    rng = np.random.default_rng(seed)
    parts = [np.zeros(RATE_HZ, dtype=np.float32)]
    spans: list[tuple[float, float]] = []
    t_s = 1.0
    for name in names:
        x = read_wav(EMODB / "wav" / name)
        span = speech_span(name[:-4])
        if span is not None:
            spans.append((t_s + span[0], t_s + span[1]))
        gap_s = float(rng.uniform(0.6, 1.6))
        parts += [x, np.zeros(round(gap_s * RATE_HZ), dtype=np.float32)]
        t_s += len(x) / RATE_HZ + round(gap_s * RATE_HZ) / RATE_HZ
    line = np.concatenate(parts)
    line += rng.normal(0.0, 10 ** (LINE_FLOOR_DBFS / 20), len(line)).astype(np.float32)
    return line, spans


def _frames_in(spans: list[tuple[float, float]], frames: int) -> np.ndarray:
    centre_s = (np.arange(frames) + 0.5) * 0.032
    inside = np.zeros(frames, dtype=bool)
    for a, b in spans:
        inside |= (centre_s >= a) & (centre_s < b)
    return inside


def line_figures(line: np.ndarray, spans: list[tuple[float, float]], model: Any) -> dict[str, Any]:
    """The whole pipeline with ``line`` as the far channel (a quiet headset as the near one): the
    line's speech frames against the labelled spans, and what else the line was taken for."""
    from edge.farend import VETO_CLASSES, frame_labels
    from edge.pipeline import Pipeline

    near = np.random.default_rng(1).normal(0.0, 10 ** (LINE_FLOOR_DBFS / 20), len(line)).astype(np.float32)
    audio = np.stack([near, line])
    pipe = Pipeline(model, trace=True)
    messages = [m for i in range(0, audio.shape[1], 1600) for m in pipe(audio[:, i:i + 1600])]
    messages += pipe.finish()
    assert pipe.trace is not None
    frames = len(pipe.trace.prob["far"])
    truth = _frames_in(spans, frames)
    found = _frames_in([(a, b) for a, b in pipe.trace.segments["far"]], frames)
    labels = np.array(frame_labels(line, RATE_HZ)[:frames])
    truth, found = truth[:len(labels)], found[:len(labels)]
    vetoed = np.isin(labels, list(VETO_CLASSES))
    metrics = [m.body for m in messages if m.kind == "metrics"]
    return {"vad_recall": float((found & truth).sum() / truth.sum()),
            "vad_precision": float((found & truth).sum() / max(found.sum(), 1)),
            "speech_frames_vetoed": float((vetoed & truth).sum() / truth.sum()),
            "speech_frames_vetoed_as": sorted(set(labels[vetoed & truth].tolist())),
            "far_signal_not_ok_windows": sum(m["far_signal"] != "ok" for m in metrics),
            "windows": len(metrics)}


def idle_line_figures(codec: str) -> dict[str, float]:
    """Share of the 32 ms frames of 6 s of white noise at each of :data:`IDLE_NOISE_DBFS`, through
    the line, that the far-end stage or the signal check call no signal: the codec turns noise under
    its smallest step into a constant, which is what a dead line gives."""
    from edge.farend import DEAD, FarEnd
    from edge.quality import SignalQuality

    out = {}
    for dbfs in IDLE_NOISE_DBFS:
        x = np.random.default_rng(0).normal(0.0, 10 ** (dbfs / 20), 6 * RATE_HZ).astype(np.float32)
        y = through_line(x, codec)
        quality, far = SignalQuality(channels=1), FarEnd()
        states = []
        for i in range(0, len(y) - 511, 512):
            quality(y[None, i:i + 512])
            states.append(quality.states[0] == "none" or far(y[i:i + 512]) == DEAD)
        out[f"{dbfs:g}"] = sum(states) / len(states)
    return out


def telephone_figures(step: int = 3) -> dict[str, Any]:
    """Every figure of this module, for the clean clips and each of :data:`CODECS`."""
    from edge.pipeline import load_vad_model

    names = clip_names(step)
    model = load_vad_model()
    line, spans = build_line(names)
    figs: dict[str, Any] = {"clips": len(names)}
    for codec in (None, *CODECS):
        key = codec or "clean"
        log.info("measuring %s", key)
        figs[key] = prosody_figures(names, codec)
        if codec != "u-law":  # the VAD hears A-law and mu-law alike (within 0.001)
            figs[key].update(line_figures(line if codec is None else through_line(line, codec),
                                          spans, model))
        if codec is not None:
            figs[key]["idle_noise_dbfs"] = idle_line_figures(codec)
    return figs


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(float(value), 4) if isinstance(value, float | np.floating) else value


def main(argv: list[str] | None = None) -> int:
    """Print the telephone figures as JSON."""
    p = argparse.ArgumentParser(allow_abbrev=False, prog="python -m bench.telephone", description=__doc__)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--step", type=int, default=3, help="use every N-th EmoDB clip (3: 137 clips)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(json.dumps(_rounded(telephone_figures(args.step)), indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Accuracy of edge prosody against Praat (parselmouth) and the EmoDB syllable labels.

Test-only references: parselmouth is imported lazily here and never by ``edge/``. Run
``python -m bench.accuracy_prosody [--step N]`` for the figures as JSON; ``prosody_figures()`` is
what ``bench.accuracy`` and ``tests/test_prosody.py`` call.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import logging
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import SHARED as DATA
from bench.common import read_wav
from edge.prosody import HOP_S, HopTrack, Prosody, analyze_clip

log = logging.getLogger(__name__)

EMODB = DATA / "emodb"
NOISE = DATA / "noise"
CLIP_S = 2.0
"""Length of every EmoDB clip here (cut or padded to 2.0 s): syllable labels past it are left out."""
GPE_TOLERANCE = 0.2
NOISE_SNR_DB = 10.0
"""Signal-to-noise ratio of the noisy pitch figures (``pitch_gpe_noisy``): a noisy but usable line."""
TEMPO_FACTORS = (0.8, 1.25)


def clip_names(step: int = 1) -> list[str]:
    """EmoDB clip names, sorted; every ``step``-th one (step 3 keeps 137 clips, all 8 speakers)."""
    return sorted(p.name for p in (EMODB / "wav").glob("*.wav"))[::step]


PRAAT_CEILING_HZ = 400.0
"""The issue's Praat reference: ``to_pitch_ac(time_step=0.01, pitch_floor=60, pitch_ceiling=400)``."""
PRAAT_HIGH_CEILING_HZ = 600.0
"""A second pitch reference: at 400 Hz Praat halves raised high voices (EmoDB's women angry or
happy), as the box's tracker did before its ceiling went to 600 Hz."""
PRAAT_RAISED_CEILING_HZ = 800.0
"""The reference for raised high voices (:func:`raised_voice_figures`): Praat up to 800 Hz."""
RAISED_SPEAKERS = ("08", "09", "13", "16")
"""EmoDB's women here; with the emotions ``W`` (anger) and ``F`` (happiness), the raised voices."""


def _praat_sound(name: str) -> Any:
    """One clean EmoDB clip as a Praat sound."""
    import parselmouth

    x = read_wav(EMODB / "wav" / name)
    return parselmouth.Sound(x.astype(np.float64), sampling_frequency=16000)


@functools.cache
def praat_hnr_db(name: str) -> float:
    """Praat's mean HNR of one clean EmoDB clip (cached): no pitch ceiling in it, so computed once
    for every reference of the clip (nine tenths of a reference's time)."""
    from parselmouth.praat import call

    harm = _praat_sound(name).to_harmonicity_ac(time_step=0.01, minimum_pitch=60,
                                                silence_threshold=0.1, periods_per_window=4.5)
    return float(call(harm, "Get mean", 0, 0))


@functools.cache
def praat_reference(name: str, ceiling_hz: float = PRAAT_CEILING_HZ) -> dict[str, Any]:
    """Praat pitch track (up to ``ceiling_hz``), mean HNR, local jitter and shimmer of one clean
    EmoDB clip (cached)."""
    from parselmouth.praat import call

    snd = _praat_sound(name)
    pitch = snd.to_pitch_ac(time_step=0.01, pitch_floor=60, pitch_ceiling=ceiling_hz)
    pp = call([snd, pitch], "To PointProcess (cc)")
    return {
        "t_s": np.asarray(pitch.xs()),
        "f0_hz": np.asarray(pitch.selected_array["frequency"]),
        "hnr_db": praat_hnr_db(name),
        "jitter": float(call(pp, "Get jitter (local)", 0, 0, 0.0001, 0.02, 1.3)),
        "shimmer": float(call([snd, pp], "Get shimmer (local)", 0, 0, 0.0001, 0.02, 1.3, 1.6)),
    }


def _silb(name: str) -> list[tuple[float, str]]:
    """The clip's ``silb`` labels as (time in seconds, text); fields split on tabs or spaces."""
    path = EMODB / "silb" / (Path(name).stem + ".silb")
    rows = [line.split() for line in path.read_text(encoding="latin-1").splitlines()]
    return [(float(r[0]), r[1]) for r in rows if len(r) >= 2]


def syllable_onsets(name: str) -> list[float]:
    """Onsets of the clip's syllables from its ``silb`` labels, inside the 2.0 s clip, seconds."""
    return [t for t, text in _silb(name) if text[0] not in ".(" and t < CLIP_S]


def _rate(onsets: list[float]) -> float | None:
    if len(onsets) < 2:
        return None
    return len(onsets) / (min(onsets[-1] + 0.2, CLIP_S) - onsets[0])


def true_rate(name: str) -> float | None:
    """Syllables per second from the clip's ``silb`` labels (onsets inside the 2.0 s clip)."""
    return _rate(syllable_onsets(name))


def rate_label_ceiling(min_gap_s: float = 0.08, step: int = 1) -> float:
    """Pearson r of a detector that finds every labelled syllable except those followed by the next
    onset within ``min_gap_s``: what merging such pairs alone costs, from the labels only.

    The labels keep the canonical syllables of elided forms ("hatte ich", "liegen und", "haben" as
    "habm"), some under 30 ms apart; no nucleus detector separates those.
    """
    est: list[float] = []
    truth: list[float] = []
    for name in clip_names(step):
        onsets = syllable_onsets(name)
        rate = _rate(onsets)
        if rate is None:
            continue
        kept = [t for t, nxt in zip(onsets, [*onsets[1:], np.inf], strict=True) if nxt - t >= min_gap_s]
        est.append(_rate(kept) or 0.0)
        truth.append(rate)
    return float(np.corrcoef(np.asarray(est), np.asarray(truth))[0, 1])


def rate_label_spread(step: int = 1) -> float:
    """How much one speaker's neutral sentences vary in their labelled syllable rate: the standard
    deviation of the log rate over each speaker's neutral clips, median over the speakers.

    A perfect syllable counter would read a 1.3x tempo ``ln(1.3) / spread`` standard deviations
    from that speaker's normal 2 s of speech: what any pace cue that must fire within 3 s is up
    against (``docs/cues.md``).
    """
    by_speaker: dict[str, list[float]] = {}
    for name in clip_names(step):
        rate = true_rate(name)
        if rate is not None and name[5] == "N":
            by_speaker.setdefault(name[:2], []).append(float(np.log(rate)))
    return float(np.median([np.std(v, ddof=1) for v in by_speaker.values() if len(v) >= 3]))


def mix_noise(x: np.ndarray, index: int, snr_db: float = NOISE_SNR_DB) -> np.ndarray:
    """``x`` plus a deterministic stretch of one of the shared noises at ``snr_db`` (whole-clip power)."""
    files = sorted(NOISE.glob("*.wav"))
    noise = _noise(files[index % len(files)])
    start = (index * 7919) % (len(noise) - len(x))
    nz = noise[start:start + len(x)]
    gain = np.sqrt(np.mean(x ** 2) / (np.mean(nz ** 2) * 10 ** (snr_db / 10)))
    return (x + gain * nz).astype(np.float32)


@functools.cache
def _noise(path: Path) -> np.ndarray:
    return read_wav(path)


def pitch_scores(f0_hz: np.ndarray, voiced: np.ndarray, ref: dict[str, Any]) -> tuple[int, int, int, int]:
    """(gross errors, frames voiced in both, voicing agreements, frames compared) on Praat's grid."""
    k = np.rint((ref["t_s"] - HOP_S / 2) / HOP_S).astype(int)
    ok = (k >= 0) & (k < len(f0_hz))
    k, pf = k[ok], ref["f0_hz"][ok]
    mine, theirs = voiced[k], pf > 0
    both = mine & theirs
    err = np.abs(f0_hz[k][both] - pf[both]) / pf[both] > GPE_TOLERANCE
    return int(err.sum()), int(both.sum()), int((mine == theirs).sum()), len(k)


def _hops(x: np.ndarray) -> HopTrack:
    """The streaming prosody stage's per-hop track of a whole clip."""
    pros = Prosody(history_s=len(x) / 16000 + 1)
    for i in range(0, len(x), 512):
        pros(x[i:i + 512])
    pros.flush()
    return pros.hops()


@functools.cache
def _clip_hops(name: str) -> HopTrack:
    """:func:`_hops` of one EmoDB clip, kept: the rate and pause figures both read every clip."""
    return _hops(read_wav(EMODB / "wav" / name))


def _track(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tr = _hops(x)
    return tr.f0_hz, tr.voiced


def _tempo(x: np.ndarray, factor: float, tmp: Path) -> np.ndarray:
    src, dst = tmp / "in.wav", tmp / "out.wav"
    with wave.open(str(src), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes())
    subprocess.run(["sox", "-V1", str(src), str(dst), "tempo", str(factor)], check=True)
    return read_wav(dst)


def rtf(seconds: float = 60.0) -> dict[str, float]:
    """Median real-time factor of the streaming stage on EmoDB speech, and its ratio to Silero.

    See :mod:`bench.prosody` (one channel, one thread, both measured in this process).
    """
    from bench.prosody import prosody_cost

    figs = prosody_cost(seconds)
    return {"prosody_rtf": figs["prosody_rtf"], "prosody_rtf_vs_silero": figs["ratio"]}


def prosody_figures(step: int = 1, tempo_step: int = 4, cost: bool = True) -> dict[str, Any]:
    """Accuracy figures of edge prosody on EmoDB.

    Args:
        step: use every ``step``-th clip (1: all 411).
        tempo_step: of those, every ``tempo_step``-th is time-stretched for the tempo check.
        cost: also measure the stage's cost (1.2 s on 2026-11-29 on a 2-core AMD EPYC, about 15 s
            on the slower machine; tests leave it out).

    Returns:
        ``pitch_gpe``, ``pitch_voicing_agree``, ``pitch_gpe_noisy`` (against the issue's Praat
        reference, up to 400 Hz), ``pitch_gpe_praat600`` and ``pitch_voicing_agree_praat600``
        (against Praat up to 600 Hz), ``hnr_r``, ``jitter_r``,
        ``shimmer_r``, ``rate_r``, ``rate_r_label_ceiling_80ms`` (:func:`rate_label_ceiling`),
        ``rate_label_spread_neutral`` (:func:`rate_label_spread`),
        ``tempo_ratio_err`` (worst of the two factors, median over clips), ``pace_tempo_ratio_median``
        (the same for the pace the too-fast cue reads),
        ``tempo_ratio_median`` per factor, ``tempo_within_10pct`` (per factor, the share of the
        stretched clips whose own ratio is within 10 % of the factor), ``clips``, ``prosody_rtf``
        (median) and ``prosody_rtf_vs_silero`` (its ratio to reference Silero VAD measured in the
        same run).
    """
    names = clip_names(step)
    err = both = agree = total = err_n = both_n = 0
    high = [0, 0, 0, 0]  # the same four counts against Praat up to 600 Hz
    ours: dict[str, list[float]] = {"hnr": [], "jitter": [], "shimmer": []}
    theirs: dict[str, list[float]] = {"hnr": [], "jitter": [], "shimmer": []}
    est_rate: list[float] = []
    ref_rate: list[float] = []
    ratios: dict[float, list[float]] = {f: [] for f in TEMPO_FACTORS}
    pace_ratios: dict[float, list[float]] = {f: [] for f in TEMPO_FACTORS}
    have_sox = shutil.which("sox") is not None
    with tempfile.TemporaryDirectory() as tmpdir:
        for i, name in enumerate(names):
            x = read_wav(EMODB / "wav" / name)
            ref = praat_reference(name)
            f0, voiced = _track(x)
            e, b, a, n = pitch_scores(f0, voiced, ref)
            err, both, agree, total = err + e, both + b, agree + a, total + n
            e, b, a, n = pitch_scores(f0, voiced, praat_reference(name, PRAAT_HIGH_CEILING_HZ))
            high = [h + v for h, v in zip(high, (e, b, a, n), strict=True)]
            f0n, voicedn = _track(mix_noise(x, i))
            e, b, _, _ = pitch_scores(f0n, voicedn, ref)
            err_n, both_n = err_n + e, both_n + b
            out = analyze_clip(x, 16000)
            for key, ours_key, ref_key in (("hnr", "hnr_db", "hnr_db"), ("jitter", "jitter_local", "jitter"),
                                           ("shimmer", "shimmer_local", "shimmer")):
                if out[ours_key] is not None and np.isfinite(ref[ref_key]):
                    ours[key].append(out[ours_key])
                    theirs[key].append(ref[ref_key])
            truth = true_rate(name)
            rate = out["articulation_rate_syl_s"]
            if truth is not None:
                est_rate.append(rate if rate is not None else 0.0)
                ref_rate.append(truth)
            if have_sox and i % tempo_step == 0 and rate:
                for factor in TEMPO_FACTORS:
                    y = analyze_clip(_tempo(x, factor, Path(tmpdir)), 16000)
                    if y["articulation_rate_syl_s"]:
                        ratios[factor].append(y["articulation_rate_syl_s"] / rate)
                    if y["pace_syl_s"] and out["pace_syl_s"]:
                        pace_ratios[factor].append(y["pace_syl_s"] / out["pace_syl_s"])
    med = {f: float(np.median(v)) if v else float("nan") for f, v in ratios.items()}

    def corr(k: str) -> float:
        return float(np.corrcoef(ours[k], theirs[k])[0, 1])

    return {
        "clips": len(names),
        "pitch_gpe": err / both,
        "pitch_voicing_agree": agree / total,
        "pitch_gpe_noisy": err_n / both_n,
        "pitch_gpe_praat600": high[0] / high[1],
        "pitch_voicing_agree_praat600": high[2] / high[3],
        "hnr_r": corr("hnr"),
        "jitter_r": corr("jitter"),
        "shimmer_r": corr("shimmer"),
        "rate_r": float(np.corrcoef(est_rate, ref_rate)[0, 1]),
        "rate_r_label_ceiling_80ms": rate_label_ceiling(0.08, step),
        "rate_label_spread_neutral": rate_label_spread(step),
        "tempo_ratio_median": {str(f): m for f, m in med.items()},
        "tempo_ratio_err": max(abs(m / f - 1.0) for f, m in med.items()),
        "tempo_within_10pct": {str(f): round(float(np.mean(np.abs(np.asarray(v) / f - 1.0) <= 0.1)), 3)
                               if v else None for f, v in ratios.items()},
        "pace_tempo_ratio_median": {str(f): float(np.median(v)) if v else None
                                    for f, v in pace_ratios.items()},
        **(rtf() if cost else {}),
    }


def raised_voice_figures(step: int = 1) -> dict[str, Any]:
    """The shipped tracker (up to 400 Hz) on raised high voices, against Praat up to 800 Hz.

    Returns:
        Over EmoDB's women angry or happy (:data:`RAISED_SPEAKERS`): ``raised_clips``,
        ``raised_praat800_above_400hz`` (share of Praat's voiced frames above 400 Hz),
        ``raised_pitch_gpe_praat800`` (the tracker's gross error against Praat up to 800 Hz) and
        ``raised_clip_median_ratio_min`` (the lowest ratio of a clip's median pitch to Praat's).
    """
    above = voiced_ref = err = both = 0
    ratios = []
    names = [n for n in clip_names(step) if n[:2] in RAISED_SPEAKERS and n[5] in "WF"]
    for name in names:
        ref = praat_reference(name, PRAAT_RAISED_CEILING_HZ)
        tr = _clip_hops(name)
        e, b, _, _ = pitch_scores(tr.f0_hz, tr.voiced, ref)
        err, both = err + e, both + b
        pf = ref["f0_hz"][ref["f0_hz"] > 0]
        above, voiced_ref = above + int((pf > 400.0).sum()), voiced_ref + len(pf)
        mine = tr.f0_hz[tr.voiced]
        if len(pf) and len(mine):
            ratios.append(float(np.median(mine) / np.median(pf)))
    return {"raised_clips": len(names),
            "raised_praat800_above_400hz": round(above / voiced_ref, 4) if voiced_ref else None,
            "raised_pitch_gpe_praat800": round(err / both, 4) if both else None,
            "raised_clip_median_ratio_min": round(min(ratios), 3) if ratios else None}


PAUSE_LABEL_MIN_S = 0.2
"""Labelled pauses this long or longer are the ones the detector should find (its own minimum)."""


def labelled_pauses(name: str) -> list[tuple[float, float]]:
    """The clip's pauses from its ``silb`` labels: from each ``(`` to the next label, inside the clip."""
    return [(t, min(nxt, CLIP_S)) for (t, text), (nxt, _) in itertools.pairwise(_silb(name))
            if text.startswith("(") and t < CLIP_S]


PAUSE_SHORTER_MIN_S = 0.15
"""The shorter minimum :func:`pause_figures` also counts from, as the detector did before 200 ms."""


def pause_figures(step: int = 1) -> dict[str, Any]:
    """Pause detection against the EmoDB ``silb`` pause labels (``(``).

    Returns:
        ``pause_recall``: share of labelled pauses of at least ``PAUSE_LABEL_MIN_S`` that a detected
        pause overlaps; ``pause_false_per_min``: detected pauses more than 50 ms from any labelled
        pause, per minute of speech (first to last voiced hop of each clip); ``pause_labelled``,
        ``pause_found``; the same with gaps counted from ``PAUSE_SHORTER_MIN_S``
        (``pause_found_from_150ms``, ``pause_false_per_min_from_150ms``).
    """
    from edge.rate import PAUSE_MIN_S, pauses

    out: dict[str, Any] = {}
    for min_s, suffix in ((PAUSE_MIN_S, ""), (PAUSE_SHORTER_MIN_S, "_from_150ms")):
        found = labelled = false = 0
        speech_s = 0.0
        for name in clip_names(step):
            tr = _clip_hops(name)
            truth = labelled_pauses(name)
            got = pauses(tr.t_s, tr.level_dbfs, tr.voiced, min_s)
            voiced = np.nonzero(tr.voiced)[0]
            speech_s += (voiced[-1] - voiced[0]) * HOP_S if len(voiced) else 0.0
            for a, b in truth:
                if b - a >= PAUSE_LABEL_MIN_S:
                    labelled += 1
                    found += any(p.start_s < b and p.end_s > a for p in got)
            false += sum(not any(p.start_s < b + 0.05 and p.end_s > a - 0.05 for a, b in truth)
                         for p in got)
        if not suffix:
            out["pause_recall"] = round(found / labelled, 3) if labelled else None
            out["pause_labelled"] = labelled
        out[f"pause_found{suffix}"] = found
        out[f"pause_false_per_min{suffix}"] = round(60.0 * false / float(speech_s), 2) if speech_s else None
    return out


MFA = DATA / "mfa"
MFA_FILLERS: dict[str, int] = {"mfa_uh": 1, "mfa_um": 1, "mfa_uhuh": 6, "mfa_uhum": 6,
                               "mfa_cutoffprogressive": 2, "mfa_crossword": 2}
"""Filled pauses ("uh", "um", "hm") per clip of ``mfa/``, counted in the reference transcripts of the
Montreal Forced Aligner's tests (MIT; e.g. ``mfa_uhum``: "montreal forced uh um uh hm hm um forced
aligner"). Every other clip there has none."""
MFA_DRAWN_OUT = ("mfa_long", "mfa_hes", "mfa_internalsil")
"""Clips whose words are drawn out in hesitation (``<hes-...>`` in the transcripts, or ``long``):
hesitation sounds too, so neither found fillers nor false ones."""


def hesitation_figures(step: int = 1) -> dict[str, Any]:
    """Hesitation sounds (:func:`edge.rate.hesitations`) against transcribed filled pauses.

    Returns:
        ``hesitation_fillers_found`` of ``hesitation_fillers`` (per clip, at most as many as the
        transcript holds: the transcripts have no times, so sounds are counted, not matched);
        ``hesitation_false_mfa``: sounds found in the MFA clips that hold neither a filler nor a
        drawn-out word (``hesitation_mfa_clean_clips`` of them);
        ``hesitation_false_per_min_emodb``: sounds found in EmoDB's fluent read sentences, per
        minute of audio; ``hesitation_drawn_out``: sounds found in :data:`MFA_DRAWN_OUT`.
    """
    from edge.rate import hesitations

    def count(tr: HopTrack) -> int:
        return len(hesitations(tr.t_s, tr.f0_hz, tr.voiced, tr.spectral_change_db))

    found = false = clean = drawn = 0
    for path in sorted(MFA.glob("*.wav")):
        n = count(_hops(read_wav(path)))
        if path.stem in MFA_FILLERS:
            found += min(n, MFA_FILLERS[path.stem])
        elif path.stem in MFA_DRAWN_OUT:
            drawn += n
        else:
            false += n
            clean += 1
    names = clip_names(step)
    emodb = sum(count(_clip_hops(name)) for name in names)
    return {"hesitation_fillers_found": found, "hesitation_fillers": sum(MFA_FILLERS.values()),
            "hesitation_false_mfa": false, "hesitation_mfa_clean_clips": clean,
            "hesitation_false_per_min_emodb": round(emodb / (len(names) * CLIP_S / 60.0), 3),
            "hesitation_drawn_out": drawn}


RATE_GRID: dict[str, tuple[float, ...]] = {
    "MIN_GAP_S": (0.06, 0.07, 0.08, 0.09),
    "DIP_DB": (0.5, 1.0, 1.5, 2.0),
    "SMOOTH_HOPS": (1, 3, 5),
    "UNVOICED_PENALTY_DB": (3.0, 6.0, 9.0),
    "ONSET_TO_NUCLEUS_S": (0.15, 0.2, 0.25),
    "FLOOR_BELOW_PEAK_DB": (15.0, 20.0, 25.0, 30.0, 35.0),
}
"""Every hand-set constant the syllable count and the articulation rate read in :mod:`edge.rate`,
and the values each could have taken. (The prosody stage's syllabic envelope, its bands and its
window, was designed against the same labels: no grid can hold that out.)"""


def rate_cv_figures(step: int = 1) -> dict[str, Any]:
    """Speaking-rate r with every constant of :mod:`edge.rate` chosen leaving out speaker and sentence.

    For each (speaker, sentence) cell, the grid point of :data:`RATE_GRID` with the best Pearson r
    on the clips of the other speakers and the other sentences is applied to the cell's clips; the
    pooled estimates are scored against :func:`true_rate`. About 30 s.

    Returns:
        ``rate_r_cv`` (the held-out figure), ``rate_r_cv_grid_points`` and
        ``rate_cv_shipped_chosen`` (share of cells whose choice is the shipped constants).
    """
    import itertools

    from edge import rate as rate_mod

    names, truth, tracks = [], [], []
    for name in clip_names(step):
        t = true_rate(name)
        if t is None:
            continue
        names.append(name)
        truth.append(t)
        tracks.append(_clip_hops(name))
    keys = list(RATE_GRID)
    points = list(itertools.product(*RATE_GRID.values()))
    shipped = tuple(getattr(rate_mod, k) for k in keys)
    est = np.zeros((len(points), len(names)))
    try:
        for p, values in enumerate(points):
            for k, v in zip(keys, values, strict=True):
                setattr(rate_mod, k, v)
            for c, tr in enumerate(tracks):
                nuclei = rate_mod.syllable_nuclei(tr.t_s, tr.syllabic_db, tr.voiced)
                est[p, c] = rate_mod.articulation_rate(nuclei, tr.t_s) or 0.0
    finally:
        for k, v in zip(keys, shipped, strict=True):
            setattr(rate_mod, k, v)
    y = np.asarray(truth)
    speaker = np.array([n[:2] for n in names])
    sentence = np.array([n[2:5] for n in names])
    pred = np.zeros(len(names))
    chosen_shipped = cells = 0
    for spk, sen in sorted(set(zip(speaker.tolist(), sentence.tolist(), strict=True))):
        test = (speaker == spk) & (sentence == sen)
        train = (speaker != spk) & (sentence != sen)
        e = est[:, train] - est[:, train].mean(axis=1, keepdims=True)
        t = y[train] - y[train].mean()
        r = (e @ t) / np.maximum(np.sqrt((e * e).sum(axis=1) * (t @ t)), 1e-12)
        best = int(np.argmax(r))
        pred[test] = est[best, test]
        cells += 1
        chosen_shipped += points[best] == shipped
    return {"rate_r_cv": float(np.corrcoef(pred, y)[0, 1]), "rate_r_cv_grid_points": len(points),
            "rate_cv_shipped_chosen": round(chosen_shipped / cells, 3)}


TEMPO_WINDOW_FACTOR = 1.3
"""The tempo of issue 4's fast stretch (``sox tempo``, pitch kept)."""
TEMPO_AGENTS = ("08", "03", "09", "13", "15", "16", "10", "12")
"""EmoDB's speakers with neutral clips: the agents of ``bench.cues``."""


def tempo_window_figures(window_s: float = 3.0, turns: int = 12) -> dict[str, Any]:
    """How well the pace, the spectral speed and the tempo (the two combined, as the ``too_fast``
    cue reads them) tell one voice's turns played 1.3 times faster from its normal ones.

    Per agent, ``turns`` turns of three of its neutral clips (trimmed, 0.25 s apart, over a
    -62 dBFS noise floor, as ``tests/_fixtures_signals.py`` builds them) as recorded and as many at
    1.3x tempo, cut into ``window_s`` windows; each window's reading over the agent's own median on
    the normal windows (the cue's baseline). About 10 s.

    Returns:
        Per measure (``pace``, ``speed``, ``tempo``): ``tempo_windows_auc`` (the chance that a fast
        window reads higher than a normal one, median over the agents),
        ``tempo_windows_read_1_3x`` (the fast windows' median ratio, median over the agents) and
        ``tempo_windows_caught_at_2pct`` (the share of fast windows over the 98th percentile of
        the normal ones: a threshold one normal window in 50 crosses; mean over the agents).
    """
    import random

    import tests._fixtures_signals as calls
    from edge import rate as rate_mod
    from tests._fixtures_fatigue import noise_floor, sox

    hops = round(window_s / HOP_S)
    auc: dict[str, list[float]] = {"pace": [], "speed": [], "tempo": []}
    read: dict[str, list[float]] = {k: [] for k in auc}
    caught: dict[str, list[float]] = {k: [] for k in auc}
    for agent in TEMPO_AGENTS:
        pool = calls.clips(agent, "N")
        fast_pool = [sox(x, "tempo", "-s", str(TEMPO_WINDOW_FACTOR)) for x in pool]
        rng = random.Random(int(agent))
        readings: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for fast in (False, True):
            for _ in range(turns):
                picks = [rng.randrange(len(pool)) for _ in range(3)]
                gap = np.zeros(round(0.25 * 16000), dtype=np.float32)
                parts = [p for i in picks for p in ((fast_pool if fast else pool)[i], gap)][:-1]
                x = np.concatenate(parts)
                x = x + noise_floor(len(x), -62.0, seed=rng.randrange(1000))
                tr = _hops(x)
                for a in range(0, len(tr.t_s) - hops + 1, hops):
                    w = slice(a, a + hops)
                    win = rate_mod.rate_window(tr.t_s[w], tr.level_dbfs[w], tr.syllabic_db[w],
                                               tr.voiced[w], tr.spectral_speed_db[w])
                    if win.pace_syl_s and win.spectral_speed_db:
                        readings[fast].append((win.pace_syl_s, win.spectral_speed_db))
        normal, fast_r = np.asarray(readings[False]), np.asarray(readings[True])
        base = np.median(normal, axis=0)
        pace_n, speed_n = normal[:, 0] / base[0], normal[:, 1] / base[1]
        pace_f, speed_f = fast_r[:, 0] / base[0], fast_r[:, 1] / base[1]
        tempo = np.vectorize(rate_mod.tempo_ratio)
        for name, n, f in (("pace", pace_n, pace_f), ("speed", speed_n, speed_f),
                           ("tempo", tempo(pace_n, speed_n), tempo(pace_f, speed_f))):
            auc[name].append(float((f[:, None] > n[None, :]).mean()))
            read[name].append(float(np.median(f)))
            caught[name].append(float((f > np.percentile(n, 98)).mean()))
    return {"tempo_windows_auc": {k: round(float(np.median(v)), 3) for k, v in auc.items()},
            "tempo_windows_read_1_3x": {k: round(float(np.median(v)), 3) for k, v in read.items()},
            "tempo_windows_caught_at_2pct": {k: round(float(np.mean(v)), 3) for k, v in caught.items()}}


def main() -> None:
    """Print the figures as one JSON object."""
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__)
    ap.add_argument("--step", type=int, default=1, help="use every N-th EmoDB clip")
    args = ap.parse_args()
    figs = {**prosody_figures(args.step), **raised_voice_figures(args.step)}
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in figs.items()}))


if __name__ == "__main__":
    main()

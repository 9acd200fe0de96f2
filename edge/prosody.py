"""Cheap prosody of one channel: pitch, loudness, voicing, HNR, jitter, shimmer, rate and pauses.

Numpy only. Pitch is a YIN-class tracker (cumulative mean normalized difference, parabolic
interpolation, voicing decision, octave correction by continuity) run on 10 ms hops of the signal
decimated to 8 kHz, all hops of a block at once with FFT cross-correlation. Jitter and shimmer come
from glottal-cycle peaks picked on the 16 kHz waveform under the pitch track; harmonics-to-noise ratio
from the normalized correlation at the pitch period; speaking rate from syllable nuclei
(:mod:`edge.rate`). Accuracy against Praat is checked by ``tests/test_prosody.py`` and
``bench/accuracy_prosody.py``.

:class:`Prosody` is a streaming stage (``__call__`` per 512-sample frame, ``window()`` for functionals
over the last seconds); :func:`analyze_clip` runs it over a whole recording.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from edge import rate as rate_mod
from edge.frames import RATE_HZ

HOP_S = 0.01
"""Analysis hop: one pitch/loudness value every 10 ms; hop ``k`` is centred at ``(k + 0.5) * HOP_S``."""
HOP_16 = 160
F0_MIN_HZ = 60.0
"""Lowest pitch tracked: under low male voices, as the issue's Praat reference (``pitch_floor=60``)."""
F0_MAX_HZ = 400.0
"""Highest pitch tracked, as the issue's Praat reference (``pitch_ceiling=400``; see the README on
raised high voices read an octave low)."""

_SR8 = 8_000
_HOP8 = 80
_TAU_MIN = int(_SR8 / F0_MAX_HZ)  # 20
_TAU_MAX = int(np.ceil(_SR8 / F0_MIN_HZ)) + 1  # 135
_WIN8 = 240  # 30 ms integration window
_SEG8 = _WIN8 + _TAU_MAX + 2
_NFFT = 384
_CENTRE8 = 120  # hop centre, in samples from the start of its segment
_LEFT8 = _CENTRE8 - _HOP8 // 2  # segment of hop k starts at 8 kHz sample k * 80 - _LEFT8

_YIN_THRESHOLD = 0.15
"""First dip of the normalized difference below this is the period (YIN's absolute threshold)."""
VOICING_APERIODICITY = 0.5
"""A hop is voiced when its normalized difference at the period is below this..."""
VOICING_GATE_DB = 25.0
"""...and its level is within this many dB of the running peak level."""
PEAK_DECAY_DB_PER_S = 2.0
"""Decay of the running peak level used by the voicing gate."""
_ABS_FLOOR_DB = -70.0
"""Hops quieter than this (dBFS) are never voiced and skip the pitch search."""
_OCTAVE_HALF = 15
_OCTAVE_TOL = 0.5
_OCTAVE_ACCEPT = 0.2
_BATCH_SAMPLES = 16384
"""Audio is analysed in blocks of about one second: one vectorized pass per block (hops lag by up to 1 s)."""

_PULSE_BOX = 21
"""Cycle peaks are picked on the waveform smoothed twice by this moving average (a 2.5 ms triangle)."""
_MATCH_LAGS = 8
"""Waveform matching searches the next cycle within this many samples of the picked peak."""
_NMS_PERIODS = 0.5
"""A cycle mark is the highest waveform maximum within this many periods on each side."""
_SYL_EDGES = (np.array([250, 400, 550, 700, 900, 1100, 1350, 1650, 2000, 2500, 3000, 3600]) * _NFFT
              / _SR8).astype(int)
"""Bin edges of the 11 bands (250-3600 Hz, roughly critical-band wide) of the syllabic envelope."""
_SYL_SCALE = 2.0 / (_NFFT * _WIN8)
"""Parseval: sum |X_k|^2 over one side times this is the mean square of a band."""
_CHANGE_LAG = rate_mod.SPECTRAL_LAG_HOPS
_SPEED_LAG = rate_mod.SPEED_LAG_HOPS
_HANN8 = np.hanning(_WIN8).astype(np.float32)

_taps = np.arange(31) - 15
_LOWPASS = (0.45 * np.sinc(0.45 * _taps) * np.hamming(31)).astype(np.float32)
_LOWPASS /= _LOWPASS.sum()


@dataclass(frozen=True)
class HopTrack:
    """Per-hop analysis of a stretch of audio (arrays of equal length, one value per 10 ms)."""

    t_s: np.ndarray
    """Hop centre times, seconds from the start of the stream."""
    f0_hz: np.ndarray
    """Fundamental frequency, 0.0 where unvoiced."""
    voiced: np.ndarray
    """Voicing flag."""
    level_dbfs: np.ndarray
    """RMS level over the 30 ms analysis window (0 dBFS = full-scale square wave)."""
    hnr_db: np.ndarray
    """Harmonics-to-noise ratio from the normalized correlation at the period; NaN where unvoiced."""
    syllabic_db: np.ndarray
    """Mean amplitude of 11 bands from 250 to 3600 Hz over the centred 30 ms window, dB; the full
    level on quiet hops. Syllable nuclei are its peaks (see :mod:`edge.rate`)."""
    spectral_change_db: np.ndarray
    """Mean absolute change of those 11 bands' shape (each band's dB less their mean) since the hop
    50 ms before; NaN unless both hops are loud. A held vowel ("euh", "um") reads low."""
    spectral_speed_db: np.ndarray
    """The same change of the 11 bands' shape of a Hann-windowed 30 ms spectrum since the hop 20 ms
    before, on every hop over the absolute floor (NaN elsewhere): how fast the spectrum moves, the
    tempo's second reading beside the syllable count (:func:`edge.rate.spectral_speed`)."""


_HOP_FIELDS = tuple(f.name for f in fields(HopTrack))
"""The field names of :class:`HopTrack`, in order."""


def _band_amp(fw: np.ndarray) -> np.ndarray:
    """Amplitudes of the 11 syllabic bands, (n, 11), of (n, _NFFT // 2 + 1) one-sided spectra."""
    pw = fw[:, _SYL_EDGES[0]:_SYL_EDGES[-1]]
    cp = np.zeros((fw.shape[0], pw.shape[1] + 1), dtype=np.float32)  # cp[:, k]: power of the first k bins
    np.cumsum(pw.real ** 2 + pw.imag ** 2, axis=1, out=cp[:, 1:])
    return np.sqrt(np.maximum(np.diff(cp[:, _SYL_EDGES - _SYL_EDGES[0]], axis=1), 0.0) * _SYL_SCALE)


def _shape_db(amp: np.ndarray) -> np.ndarray:
    """Each band's dB less the mean of the hop's bands: the spectral shape, loudness left out."""
    band_db = 20.0 * np.log10(amp + 1e-12)
    return band_db - (np.add.reduce(band_db, axis=1) / amp.shape[1])[:, None]


def _yin_hops(
    seg: np.ndarray, hum_check: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run the difference-function search on a (n, _SEG8) block of segments (with ``hum_check``,
    a dip at the longest lag searched, still falling beyond it, is no period).

    Returns:
        (tau in 8 kHz samples, aperiodicity, normalized correlation at tau, cmnd rows,
        syllabic envelope in dB, (n, 11) spectral shape in dB).
    """
    n = seg.shape[0]
    buf = np.zeros((n, _NFFT), dtype=np.float32)
    buf[:, :_SEG8] = seg
    fa = np.fft.rfft(buf, axis=1)
    buf[:, _WIN8:] = 0.0
    fw = np.fft.rfft(buf, axis=1)
    r = np.fft.irfft(fa * np.conj(fw), _NFFT, axis=1)[:, :_TAU_MAX + 2].astype(np.float32)
    # syllabic envelope: mean amplitude of 11 bands of the centred 30 ms window, in dB
    amp = _band_amp(fw)
    syl_db = 20.0 * np.log10(np.add.reduce(amp, axis=1) / amp.shape[1] + 1e-12)  # .mean(axis=1), cheaper
    shape_db = _shape_db(amp)
    sq = seg * seg
    c = np.empty((n, _SEG8 + 1), dtype=np.float32)
    c[:, 0] = 0.0
    np.cumsum(sq, axis=1, out=c[:, 1:])
    taus = np.arange(_TAU_MAX + 2)
    e_tau = c[:, _WIN8:_WIN8 + _TAU_MAX + 2] - c[:, :_TAU_MAX + 2]  # energy of seg[tau:tau + _WIN8]
    e0 = e_tau[:, :1]
    d = np.maximum(e0 + e_tau - 2.0 * r, 0.0)
    cs = np.cumsum(d[:, 1:], axis=1)
    dn = np.ones_like(d)
    dn[:, 1:] = d[:, 1:] * taus[1:] / np.maximum(cs, 1e-12)
    sub = dn[:, _TAU_MIN:_TAU_MAX + 1]
    cand = sub < _YIN_THRESHOLD
    cand[:, :-1] &= sub[:, :-1] <= sub[:, 1:]
    has = cand.any(axis=1)
    idx = np.where(has, np.argmax(cand, axis=1), np.argmin(sub, axis=1)) + _TAU_MIN
    rows = np.arange(n)
    tau, aper = _parabola(dn, rows, _clip(idx, 1, _TAU_MAX))
    if hum_check:  # a period longer than any voice's: 50 Hz mains hum read 58.8 Hz, voiced
        beyond = (idx >= _TAU_MAX) & (dn[rows, _TAU_MAX + 1] < dn[rows, _TAU_MAX])
        aper = np.where(beyond, 1.0, aper)
    i0 = _clip(np.rint(tau).astype(int), 1, _TAU_MAX)
    ncc = r[rows, i0] / np.sqrt(np.maximum(e0[:, 0] * e_tau[rows, i0], 1e-20))
    return tau, aper, ncc, dn, syl_db, shape_db


def _decimate(x: np.ndarray, m: int) -> np.ndarray:
    """The first ``m`` samples at 8 kHz of the 16 kHz samples ``x``: ``sum_k _LOWPASS[k] * x[2j + k]``.

    Polyphase: the even and the odd samples are each made contiguous once, then the taps add their
    terms one after the other, in float32: the same sums in the same order as the product of a
    strided (m, 31) view of ``x`` with the taps, at half its cost (numpy cannot hand that view to BLAS).
    """
    phases = (x[0::2].copy(), x[1::2].copy())
    y = np.zeros(m, dtype=np.float32)
    for k, h in enumerate(_LOWPASS):
        y += h * phases[k % 2][k // 2:k // 2 + m]
    return y


def _windows(x: np.ndarray, width: int) -> np.ndarray:
    """Every window of ``width`` consecutive samples of the 1-D ``x``, as a read-only (n, width)
    view: ``np.lib.stride_tricks.sliding_window_view(x, width)`` without its argument checks,
    which cost more than the view on the arrays here."""
    step = x.strides[0]
    return np.lib.stride_tricks.as_strided(x, (len(x) - width + 1, width), (step, step),
                                           writeable=False)


def _box(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average of odd ``width`` (zero padded), by cumulative sums."""
    n, half = len(x), width // 2
    c = np.zeros(n + width)  # c[half + 1 + i] = x[0] + ... + x[i], held after the end
    np.cumsum(x, dtype=np.float64, out=c[half + 1:n + half + 1])
    c[n + half + 1:] = c[n + half]
    mean = c[width:] - c[:-width]
    mean /= width
    return mean.astype(np.float32)


def _parabola(dn: np.ndarray, rows: np.ndarray, i0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parabolic interpolation of the minimum of ``dn[rows, i0]``: (tau, value at the integer lag)."""
    a, b, c = dn[rows, i0 - 1], dn[rows, i0], dn[rows, i0 + 1]
    den = a - 2.0 * b + c
    off = _clip(0.5 * (a - c) / np.where(np.abs(den) > 1e-12, den, np.inf), -1.0, 1.0)
    return i0 + off, b


def _clip(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``np.clip(x, lo, hi)`` (the same values) without its overhead, which costs more than the
    arrays here."""
    return np.minimum(np.maximum(x, lo), hi)


def _octave_fix(tau: np.ndarray, aper: np.ndarray, dn: np.ndarray, voiced: np.ndarray,
                context: np.ndarray) -> None:
    """Move octave jumps back towards the local mean pitch, in place, when the other lag also fits.

    Args:
        tau: periods (8 kHz samples) of the hops of this block; corrected in place.
        aper: aperiodicity at ``tau``; updated in place.
        dn: normalized difference rows of the block.
        voiced: voicing flags of the block.
        context: log2 f0 of the preceding hops (NaN where unvoiced), for the running mean.
    """
    lf = np.where(voiced, np.log2(_SR8 / tau), np.nan)
    h = _OCTAVE_HALF
    pad = np.concatenate([context[-h:] if len(context) else np.zeros(0),
                          lf, np.full(h, np.nan)])
    pad = np.concatenate([np.full(h + len(lf) + h - len(pad), np.nan), pad])
    ok = ~np.isnan(pad)
    cs = np.concatenate([[0.0], np.cumsum(np.where(ok, pad, 0.0))])
    cn = np.concatenate([[0], np.cumsum(ok)])
    w = 2 * h + 1
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = (cs[w:] - cs[:-w]) / (cn[w:] - cn[:-w])  # local mean of voiced log2 f0
    dev = lf - ref
    for mask, factor in ((voiced & (dev > _OCTAVE_TOL), 2.0), (voiced & (dev < -_OCTAVE_TOL), 0.5)):
        ii = np.nonzero(mask)[0]
        if not len(ii):
            continue
        target = tau[ii] * factor
        lo = np.floor(target * 0.85).astype(int)
        hi = np.ceil(target * 1.15).astype(int)
        ok = (lo >= _TAU_MIN) & (hi <= _TAU_MAX)
        ii, lo, hi = ii[ok], lo[ok], hi[ok]
        if not len(ii):
            continue
        rows = np.arange(len(ii))
        idx = _clip(np.minimum(lo[:, None] + np.arange(12)[None, :], hi[:, None]), 1, _TAU_MAX)
        sub = dn[ii]
        best = idx[rows, np.argmin(sub[rows[:, None], idx], axis=1)]
        t2, a2 = _parabola(sub, rows, best)
        good = a2 < aper[ii] + _OCTAVE_ACCEPT
        tau[ii[good]] = t2[good]
        aper[ii[good]] = a2[good]


def _cycles(x16: np.ndarray, f0_hz: np.ndarray, runs: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """Glottal cycles of the voiced runs of one block, all runs in one vectorized pass.

    In each run, the waveform's polarity is chosen so that the larger peaks are positive; a cycle mark
    is the highest maximum of the smoothed waveform within half a period on each side (one per cycle);
    each cycle's length is then refined by waveform matching: the lag, within a few samples of the
    mark distance, that maximizes the normalized correlation between the cycle and the next one, with
    parabolic interpolation (as Praat's cross-correlation marks).

    Args:
        x16: 16 kHz samples of the block, starting at the start of its first hop.
        f0_hz: pitch of each hop of the block (0 where unvoiced).
        runs: (runs, 2) first and end hop of each voiced run, increasing.

    Returns:
        Per run: (absolute differences of consecutive periods in s, absolute differences of
        consecutive period peak amplitudes, valid periods in s, period peak amplitudes); pairs follow
        Praat's limits (periods of 0.1 to 20 ms, consecutive ratio at most 1.3).
    """
    z = np.zeros(0)
    nr = len(runs)
    if not nr:
        return []
    n = len(x16)
    s_run, e_run = runs[:, 0] * HOP_16, np.minimum(runs[:, 1] * HOP_16, n)
    bounds = np.empty(2 * nr, dtype=np.intp)
    bounds[0::2], bounds[1::2] = s_run, np.minimum(e_run, n - 1)
    xs = np.append(x16, np.float32(0.0))
    mx = np.maximum.reduceat(xs, bounds)[0::2]
    mn = np.minimum.reduceat(xs, bounds)[0::2]
    hop_sign = np.zeros(len(f0_hz), dtype=np.float32)
    hop_run = np.full(len(f0_hz), -1)
    for i, (a, b) in enumerate(runs.tolist()):
        hop_sign[a:b] = 1.0 if mx[i] >= -mn[i] else -1.0
        hop_run[a:b] = i
    raw = x16 * np.repeat(hop_sign, HOP_16)[:n]
    y = _box(_box(raw, _PULSE_BOX), _PULSE_BOX)  # triangular 2.5 ms smoothing (steadier peaks)
    lm = np.nonzero((y[1:-1] >= y[:-2]) & (y[1:-1] > y[2:]))[0] + 1
    rid = hop_run[np.minimum(lm // HOP_16, len(f0_hz) - 1)]
    lm, rid = lm[rid >= 0], rid[rid >= 0]
    if len(lm) < 3:
        return [(z, z, z, z)] * nr
    per_lm = RATE_HZ / f0_hz[lm // HOP_16]
    h = y[lm]
    half = _NMS_PERIODS * per_lm
    run_lo = np.searchsorted(lm, s_run)[rid]
    run_hi = np.searchsorted(lm, e_run)[rid]
    lo = np.maximum(np.searchsorted(lm, lm - half, side="left"), run_lo)
    hi = np.minimum(np.searchsorted(lm, lm + half, side="right"), run_hi)
    bnd = np.empty(2 * len(lm), dtype=np.intp)
    bnd[0::2], bnd[1::2] = lo, hi
    keep = h >= np.maximum.reduceat(np.append(h, -np.inf), bnd)[0::2]
    pi, rid, per_pi = lm[keep], rid[keep], per_lm[keep]
    # one period per consecutive pair of marks of the same run; a lost cycle is no period
    d0 = np.diff(pi)
    ok = (rid[1:] == rid[:-1]) & (d0 <= 1.25 * per_pi[:-1])
    per = np.where(ok, d0, np.nan).astype(float)
    w_c = np.maximum(8, (0.8 * per_pi[:-1]).astype(np.intp))
    w = int(w_c.max()) if len(w_c) else 8
    st = pi[:-1] - w_c // 2
    ok &= (st >= 0) & (pi[1:] + w + _MATCH_LAGS + 1 < n)
    ii = np.nonzero(ok)[0]
    if len(ii):
        lags = np.arange(-_MATCH_LAGS, _MATCH_LAGS + 1)
        padded = np.concatenate([raw, np.zeros(w + 2 * _MATCH_LAGS + 2, dtype=raw.dtype)])
        win = _windows(padded, w)
        mask = np.arange(w)[None, :] < w_c[ii, None]
        ref = win[st[ii]] * mask
        cs = np.zeros(len(padded) + 1)  # cs[i]: energy of padded[:i]
        np.cumsum(np.square(padded, dtype=np.float64), out=cs[1:])
        at = (st[ii] + d0[ii])[:, None] + lags[None, :]
        num = np.einsum("ck,clk->cl", ref, win[at])
        wc = w_c[ii]
        den = np.sqrt((cs[st[ii] + wc] - cs[st[ii]])[:, None] * (cs[at + wc[:, None]] - cs[at])) + 1e-12
        r = num / den
        best = _clip(r.argmax(axis=1), 1, len(lags) - 2)
        rows = np.arange(len(best))
        ra, rb, rc = r[rows, best - 1], r[rows, best], r[rows, best + 1]
        den2 = ra - 2 * rb + rc
        off = _clip(0.5 * (ra - rc) / np.where(np.abs(den2) > 1e-12, den2, np.inf), -1.0, 1.0)
        per[ii] = d0[ii] + lags[best] + off
    amp = np.maximum.reduceat(raw, pi)[:-1]  # peak of each period, mark to next mark
    per_s = per / RATE_HZ
    with np.errstate(invalid="ignore"):
        valid = (per_s >= 1e-4) & (per_s <= 0.02)
        p1, p2 = per_s[:-1], per_s[1:]
        pair = valid[:-1] & valid[1:] & (np.maximum(p1, p2) <= 1.3 * np.minimum(p1, p2))
    dp_all, da_all = np.abs(p2 - p1), np.abs(amp[1:] - amp[:-1])
    prid = rid[:-1]  # run of each period (meaningful where valid)
    out: list[tuple[np.ndarray, ...]] = []
    cut_p = np.searchsorted(prid, np.arange(nr + 1))
    for i in range(nr):
        a, b = cut_p[i], cut_p[i + 1]
        sel_pair = pair[a:max(a, b - 1)]
        out.append((dp_all[a:max(a, b - 1)][sel_pair], da_all[a:max(a, b - 1)][sel_pair],
                    per_s[a:b][valid[a:b]], amp[a:b][valid[a:b]]))
    return out


@dataclass
class ProsodyWindow:
    """Prosodic functionals of one channel over a window; ``None`` where there was too little voice."""

    start_s: float
    end_s: float
    voiced_ratio: float
    """Share of hops that are voiced."""
    level_dbfs: float | None
    """Mean level of voiced hops, dBFS."""
    f0_median_hz: float | None
    pitch_range_st: float | None
    """10th to 90th percentile of voiced pitch, semitones."""
    pitch_movement_st_per_s: float | None
    """Summed absolute semitone change between consecutive voiced hops per voiced second."""
    hnr_db: float | None
    jitter_local: float | None
    """Mean absolute difference of consecutive periods over the mean period (Praat's local jitter)."""
    shimmer_local: float | None
    """Mean absolute difference of consecutive peak amplitudes over the mean amplitude."""
    syllables: int
    articulation_rate_syl_s: float | None
    """Syllables per second from the first to the last nucleus (pauses between them included)."""
    pace_syl_s: float | None
    """Syllables per second while the voice runs: pauses left out (see :func:`edge.rate.pace`)."""
    speaking_rate_syl_s: float | None
    """Syllables per second of the window."""
    pauses: int
    """Silent gaps of 200 ms to 2 s between voiced stretches."""
    pauses_per_min: float | None
    """None when no pause could be heard over the window's noise (:func:`edge.rate.pauses_audible`);
    ``breaths`` is then 0 for the same reason."""
    breaths: int
    """Pauses that hold an audible unvoiced breath noise."""
    pause_s_mean: float | None
    hesitations: int = 0
    """Hesitation sounds ("euh", "um", a drawn-out syllable) found in the window (see
    :func:`edge.rate.hesitations`)."""
    floor_dbfs: float | None = None
    """The channel's noise floor under the voice: the 5th percentile of the window's live hop
    levels (fed silence left out), dBFS; None with fewer than :data:`FLOOR_MIN_HOPS` live hops."""
    filled_pauses_s: tuple[tuple[float, float], ...] = ()
    """(start, end) of the hesitation sounds the voice went on after (:func:`edge.rate.filled_pauses`),
    seconds of the stage's own time."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict with floats rounded."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


class Prosody:
    """Streaming prosody of one channel of 16 kHz float32 samples.

    Args:
        history_s: how much per-hop history to keep for :meth:`window`, seconds.
        hum_check: refuse a pitch period longer than the tracker's range (50 Hz mains hum);
            off only where the committed affect model's features were made without it.
        spectral_speed: compute ``HopTrack.spectral_speed_db`` (one more FFT per hop; NaN
            without): only the agent's tempo reads it.
    """

    def __init__(self, history_s: float = 60.0, hum_check: bool = True,
                 spectral_speed: bool = True) -> None:
        self.history_s = history_s
        self.hum_check = hum_check
        self.spectral_speed = spectral_speed
        self.reset()

    def reset(self) -> None:
        """Forget all audio and history."""
        self._dz = np.zeros(15, dtype=np.float32)  # decimator input, left-padded with 15 zeros
        self._x8 = np.zeros(_LEFT8, dtype=np.float32)  # 8 kHz samples, self._x8[0] is sample _x8_base
        self._x8_base = -_LEFT8
        self._x16 = np.zeros(0, dtype=np.float32)  # 16 kHz samples kept for cycle picking
        self._x16_base = 0
        self._next_hop = 0
        self._peak_db = -120.0
        self._t_last_peak = 0.0
        self._tracks: list[HopTrack] = []
        self._joined: HopTrack | None = None
        """The first ``_joined_n`` tracks joined (several windows read them each second): each new
        track is added to them once, not the whole history joined again."""
        self._joined_n = 0
        self._cycles: list[tuple[float, np.ndarray, np.ndarray, np.ndarray]] = []
        self._amps: list[tuple[float, np.ndarray]] = []
        self._lf_context = np.zeros(0)
        self._shapes = np.full((_CHANGE_LAG, len(_SYL_EDGES) - 1), np.nan, dtype=np.float32)
        """The last hops' spectral shapes (NaN on quiet hops), for the next block's change."""
        self._speed_shapes = np.full((_SPEED_LAG, len(_SYL_EDGES) - 1), np.nan, dtype=np.float32)
        """The same for the Hann-windowed shapes of ``spectral_speed_db``."""
        self._samples_in = 0
        self._pending: list[np.ndarray] = []
        self._pending_n = 0

    @property
    def audio_s(self) -> float:
        """Seconds of audio received."""
        return self._samples_in / RATE_HZ

    def __call__(self, samples: np.ndarray) -> None:
        """Append one block (typically 512 samples) of mono float32 audio at 16 kHz."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._pending.append(x)
        self._pending_n += len(x)
        self._samples_in += len(x)
        if self._pending_n >= _BATCH_SAMPLES:
            self.catch_up()

    def catch_up(self) -> None:
        """Analyse every hop whose audio is complete now, without waiting for a full batch: the
        cues read the agent's last second, not the one before (the stream's end is not padded)."""
        self._ingest()
        n = self._ready_hops()
        if n > 0:
            self._process(n)

    def _ingest(self) -> None:
        """Decimate the pending 16 kHz samples into the 8 kHz buffer."""
        if not self._pending:
            return
        x = np.concatenate(self._pending)
        if not np.isfinite(x).all():
            x = np.nan_to_num(x, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
        self._pending = []
        self._pending_n = 0
        self._x16 = np.concatenate([self._x16, x])
        self._dz = np.concatenate([self._dz, x])
        # 8 kHz sample m is sum_k h[k] * padded[2m + k]: centred on 16 kHz sample 2m
        m = (len(self._dz) - 31) // 2 + 1
        if m > 0:
            self._x8 = np.concatenate([self._x8, _decimate(self._dz, m)])
            used = 2 * m
            self._dz = self._dz[used:]

    def _ready_hops(self) -> int:
        end8 = self._x8_base + len(self._x8)
        last = (end8 - _SEG8 + _LEFT8) // _HOP8  # last hop whose segment is complete
        return max(0, last + 1 - self._next_hop)

    def flush(self) -> None:
        """Analyse every hop still pending, padding the end of the stream with silence."""
        self._ingest()
        pad = _SEG8 * 2 + 32
        self._x8 = np.concatenate([self._x8, np.zeros(pad, dtype=np.float32)])
        total_hops = self._samples_in // HOP_16
        n = min(self._ready_hops(), total_hops - self._next_hop)
        if n > 0:
            self._process(n)
        self._x8 = self._x8[: len(self._x8) - pad]

    def _process(self, n: int) -> None:
        k0 = self._next_hop
        s0 = k0 * _HOP8 - _LEFT8 - self._x8_base
        view = _windows(self._x8[s0:], _SEG8)[: n * _HOP8: _HOP8]
        seg = np.ascontiguousarray(view[:n])
        t_s = (np.arange(k0, k0 + n) + 0.5) * HOP_S
        win = seg[:, :_WIN8]
        level = 10.0 * np.log10(np.add.reduce(win * win, axis=1) / _WIN8 + 1e-12)  # the mean square
        # running peak with decay: peak_k = max_j<=k (level_j + decay*t_j) - decay*t_k
        dec = PEAK_DECAY_DB_PER_S
        prev = self._peak_db + dec * self._t_last_peak
        peak = np.maximum.accumulate(np.maximum(level + dec * t_s, prev)) - dec * t_s
        self._peak_db = float(peak[-1])
        self._t_last_peak = float(t_s[-1])
        loud = (level > _ABS_FLOOR_DB) & (level > peak - VOICING_GATE_DB)
        tau = np.full(n, float(_TAU_MAX))
        aper = np.ones(n)
        ncc = np.zeros(n)
        syl = level.copy()
        shapes = np.concatenate([self._shapes, np.full((n, self._shapes.shape[1]), np.nan,
                                                       dtype=np.float32)])
        ii = np.nonzero(loud)[0]
        if len(ii):
            t_i, a_i, c_i, dn, s_i, shape_i = _yin_hops(seg[ii], self.hum_check)
            v_i = a_i < VOICING_APERIODICITY
            # the octave fix runs on the loud hops only, in order, after the previous blocks' hops
            _octave_fix(t_i, a_i, dn, v_i, self._lf_context)
            tau[ii], aper[ii], ncc[ii], syl[ii] = t_i, a_i, c_i, s_i
            shapes[_CHANGE_LAG + ii] = shape_i
        change = np.add.reduce(np.abs(shapes[_CHANGE_LAG:] - shapes[:-_CHANGE_LAG]), axis=1) / shapes.shape[1]
        self._shapes = shapes[-_CHANGE_LAG:]
        speed = np.full(n, np.nan)
        if self.spectral_speed:
            # every hop over the floor, not only the loud ones: a word's quieter edges move fastest
            hann = _shape_db(_band_amp(np.fft.rfft(win * _HANN8, _NFFT, axis=1)))
            hann[level <= _ABS_FLOOR_DB] = np.nan
            speed_shapes = np.concatenate([self._speed_shapes, hann])
            speed = np.add.reduce(np.abs(speed_shapes[_SPEED_LAG:] - speed_shapes[:-_SPEED_LAG]),
                                  axis=1) / hann.shape[1]
            self._speed_shapes = speed_shapes[-_SPEED_LAG:]
        voiced = loud & (aper < VOICING_APERIODICITY)
        f0 = np.where(voiced, _SR8 / tau, 0.0)
        r = _clip(ncc, 1e-6, 1 - 1e-6)
        hnr = np.where(voiced, 10.0 * np.log10(r / (1.0 - r)), np.nan)
        self._lf_context = np.concatenate(
            [self._lf_context, np.where(voiced[loud], np.log2(np.where(f0 > 0, f0, 1.0))[loud], np.nan)]
        )[-_OCTAVE_HALF:]
        track = HopTrack(t_s, f0, voiced, level, hnr, syl, change, speed)
        self._tracks.append(track)
        self._cycles_from(track, k0)
        self._next_hop = k0 + n
        self._trim()

    def _cycles_from(self, track: HopTrack, k0: int) -> None:
        runs = rate_mod.runs(track.voiced)
        runs = runs[runs[:, 1] - runs[:, 0] >= 3]
        s16 = k0 * HOP_16 - self._x16_base
        e16 = (k0 + len(track.t_s)) * HOP_16 - self._x16_base
        if not len(runs) or s16 < 0 or e16 > len(self._x16):
            return
        for (a, _), (dp, da, per, amps) in zip(runs.tolist(),
                                              _cycles(self._x16[s16:e16], track.f0_hz, runs), strict=True):
            self._cycles.append((float(track.t_s[a]), dp, da, per))
            self._amps.append((float(track.t_s[a]), amps))

    def _trim(self) -> None:
        keep_from = self._next_hop * HOP_S - self.history_s
        while self._tracks and self._tracks[0].t_s[-1] < keep_from:
            dropped = self._tracks.pop(0)
            if self._joined is not None:  # the joined tracks start with it
                self._joined_n -= 1
                self._joined = _tail(self._joined, len(dropped.t_s)) if self._joined_n else None
        while self._cycles and self._cycles[0][0] < keep_from:
            self._cycles.pop(0)
        while self._amps and self._amps[0][0] < keep_from:
            self._amps.pop(0)
        # keep the 16 kHz and 8 kHz buffers short: only what pending hops still need
        drop16 = self._next_hop * HOP_16 - 2 * HOP_16 - self._x16_base
        if drop16 > 0:
            self._x16 = self._x16[drop16:]
            self._x16_base += drop16
        drop8 = self._next_hop * _HOP8 - _LEFT8 - self._x8_base
        if drop8 > 0:
            self._x8 = self._x8[drop8:]
            self._x8_base += drop8

    @property
    def analysed(self) -> bool:
        """Whether any hop has been analysed since the last reset."""
        return bool(self._tracks)

    def hops(self, last_s: float | None = None) -> HopTrack:
        """Per-hop track of the last ``last_s`` seconds analysed (all history when ``None``); its
        arrays are read-only views (callers copy before changing them)."""
        if not self._tracks:
            z = np.zeros(0)
            return HopTrack(z, z, np.zeros(0, dtype=bool), z, z, z, z, z)
        if self._joined_n < len(self._tracks):
            parts = self._tracks[self._joined_n:]
            if self._joined is not None:
                parts.insert(0, self._joined)
            self._joined = HopTrack(*(np.concatenate([getattr(t, f) for t in parts])
                                      for f in _HOP_FIELDS))
            self._joined_n = len(self._tracks)
            for f in _HOP_FIELDS:
                getattr(self._joined, f).flags.writeable = False
        cat = self._joined
        assert cat is not None
        if last_s is None:
            return cat
        first = int(np.searchsorted(cat.t_s, cat.t_s[-1] + HOP_S / 2 - last_s))  # hop times increase
        return _tail(cat, first)

    def rate_window(self, seconds: float) -> rate_mod.RateWindow:
        """Only the syllable rate and pauses over the last ``seconds`` (cheaper than :meth:`window`)."""
        tr = self.hops(seconds)
        return rate_mod.rate_window(tr.t_s, tr.level_dbfs, tr.syllabic_db, tr.voiced,
                                    tr.spectral_speed_db)

    def window(self, seconds: float = 10.0, flush: bool = False) -> ProsodyWindow:
        """Functionals over the last ``seconds`` of analysed audio.

        Args:
            seconds: window length, seconds.
            flush: analyse pending hops first (padding with silence); use at the end of a stream.

        Returns:
            The window's :class:`ProsodyWindow`.
        """
        if flush:
            self.flush()
        tr = self.hops(seconds)
        start_s = float(tr.t_s[0] - HOP_S / 2) if len(tr.t_s) else 0.0
        cycles = [c for c in self._cycles if c[0] >= start_s]
        amps = [a for t, a in self._amps if t >= start_s]
        return functionals(tr, cycles, amps)


FLOOR_MIN_HOPS = 100
"""Live hops (1 s) a window needs for a noise floor."""


def _floor_dbfs(level_dbfs: np.ndarray) -> float | None:
    """The 5th percentile of the live hop levels (see :attr:`ProsodyWindow.floor_dbfs`)."""
    live = level_dbfs[level_dbfs > rate_mod.DIGITAL_SILENCE_DBFS]
    return rate_mod.percentile(live, 5) if len(live) >= FLOOR_MIN_HOPS else None


def functionals(tr: HopTrack, cycles: list[tuple[float, np.ndarray, np.ndarray, np.ndarray]],
                amps: list[np.ndarray]) -> ProsodyWindow:
    """Summarise a per-hop track and its glottal cycles into a :class:`ProsodyWindow`."""
    n = len(tr.t_s)
    start_s = float(tr.t_s[0] - HOP_S / 2) if n else 0.0
    end_s = float(tr.t_s[-1] + HOP_S / 2) if n else 0.0
    dur_s = end_s - start_s
    v = tr.voiced
    nv = int(v.sum())
    enough = nv >= 10
    f0v = tr.f0_hz[v]
    st = 12.0 * np.log2(f0v / 100.0) if nv else np.zeros(0)
    level = float(tr.level_dbfs[v].mean()) if nv else None
    f0_med = rate_mod.percentile(f0v, 50) if enough else None
    rng = rate_mod.percentile(st, 90) - rate_mod.percentile(st, 10) if enough else None
    movement = None
    if enough:
        both = v[1:] & v[:-1]
        lf = 12.0 * np.log2(np.where(tr.f0_hz > 0, tr.f0_hz, 1.0) / 100.0)
        movement = float(np.abs(np.diff(lf))[both].sum() / (nv * HOP_S))
    hnr_v = tr.hnr_db[v]
    hnr = float(hnr_v[~np.isnan(hnr_v)].mean()) if enough else None  # np.nanmean, less overhead
    dp = np.concatenate([c[1] for c in cycles]) if cycles else np.zeros(0)
    da = np.concatenate([c[2] for c in cycles]) if cycles else np.zeros(0)
    per = np.concatenate([c[3] for c in cycles]) if cycles else np.zeros(0)
    am = np.concatenate(amps) if amps else np.zeros(0)
    jitter = float(dp.mean() / per.mean()) if len(dp) >= 5 and len(per) else None
    shimmer = float(da.mean() / np.abs(am).mean()) if len(da) >= 5 and len(am) else None
    syl = rate_mod.syllable_nuclei(tr.t_s, tr.syllabic_db, v)
    art = rate_mod.articulation_rate(syl, tr.t_s)
    pauses = rate_mod.pauses(tr.t_s, tr.level_dbfs, v)
    n_p = len(pauses)
    hes = rate_mod.hesitations(tr.t_s, tr.f0_hz, v, tr.spectral_change_db)
    return ProsodyWindow(
        start_s=start_s, end_s=end_s,
        voiced_ratio=float(nv / n) if n else 0.0,
        level_dbfs=level, f0_median_hz=f0_med, pitch_range_st=rng,
        pitch_movement_st_per_s=movement, hnr_db=hnr, jitter_local=jitter, shimmer_local=shimmer,
        syllables=len(syl), articulation_rate_syl_s=art, pace_syl_s=rate_mod.pace(syl),
        speaking_rate_syl_s=(len(syl) / dur_s) if dur_s > 0 and enough else None,
        pauses=n_p, pauses_per_min=((60.0 * n_p / dur_s) if dur_s > 0 else 0.0)
        if rate_mod.pauses_audible(tr.level_dbfs, v) else None,
        breaths=sum(1 for p in pauses if p.breath),
        pause_s_mean=float(np.mean([p.end_s - p.start_s for p in pauses])) if n_p else None,
        hesitations=len(hes), floor_dbfs=_floor_dbfs(tr.level_dbfs),
        filled_pauses_s=tuple((round(a, 3), round(b, 3)) for a, b in rate_mod.filled_pauses(hes, tr.t_s, v)),
    )


def _tail(track: HopTrack, first: int) -> HopTrack:
    """The hops of ``track`` from hop ``first`` on (views)."""
    return HopTrack(*(getattr(track, f)[first:] for f in _HOP_FIELDS))


def analyze_clip(samples: np.ndarray, rate_hz: int = RATE_HZ) -> dict[str, Any]:
    """Prosody of a whole mono recording, through the same streaming stage.

    Args:
        samples: mono float samples, full scale +-1.0.
        rate_hz: their sample rate; must be 16000 (resample first).

    Returns:
        A JSON-ready dict: the window's functionals (``level_dbfs``: the mean voiced level) plus
        the per-hop ``f0_hz``, ``voiced`` and ``level_dbfs_track`` tracks (10 ms hops, hop k
        centred at (k + 0.5) * 10 ms).
    """
    if rate_hz != RATE_HZ:
        raise ValueError(f"analyze_clip needs {RATE_HZ} Hz audio, got {rate_hz} Hz")
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    pros = Prosody(history_s=len(x) / RATE_HZ + 1.0)
    for i in range(0, len(x), 512):
        pros(x[i:i + 512])
    win = pros.window(len(x) / RATE_HZ + 1.0, flush=True)
    tr = pros.hops()
    out = win.as_dict()
    out["hop_s"] = HOP_S
    out["f0_hz"] = np.round(tr.f0_hz, 2).tolist()
    out["voiced"] = tr.voiced.astype(bool).tolist()
    out["level_dbfs_track"] = np.round(tr.level_dbfs, 2).tolist()  # the scalar stays
    return out

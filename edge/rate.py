"""Speaking rate without speech recognition, and pauses, from a 10 ms level and voicing track.

Syllable nuclei are peaks of the smoothed level contour inside voiced speech that stand out from the
dips on both sides (in the manner of de Jong and Wempe, 2009, but on a per-hop track with a dip test
on both sides and a level floor relative to the speaker's own loudness). Pauses are quiet unvoiced
gaps between voiced stretches. Hesitation sounds are long steady voiced stretches
(:func:`hesitations`); those the speaker talks on after are filled pauses (:func:`filled_pauses`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HOP_S = 0.01
"""Step of the level and voicing contours this module reads: the prosody stage's 10 ms hop."""
SMOOTH_HOPS = 3
"""Width of the moving average applied to the level contour (hops)."""
DIP_DB = 1.0
"""A nucleus must rise this many dB above the lowest point since the previous nucleus."""
UNVOICED_PENALTY_DB = 6.0
"""Unvoiced hops are lowered by this much, so a voicing break counts as a dip."""
FLOOR_BELOW_PEAK_DB = 25.0
"""Nuclei quieter than the window's loud voiced level minus this are ignored."""
MIN_GAP_S = 0.07
"""Two nuclei are at least this far apart (fast read speech has syllables 70-90 ms long)."""
ONSET_TO_NUCLEUS_S = 0.2
"""Added to the nucleus span: the time from the last syllable's onset to the end of speech."""
PACE_GAP_MAX_S = 0.35
"""For the pace, a gap between two nuclei longer than this holds a pause (or the other side's turn)
and is left out."""
PACE_MIN_GAPS = 5
"""The pace needs this many gaps of running speech: two close nuclei in hesitant speech are no pace."""
PAUSE_MIN_S = 0.2
"""Shorter quiet gaps are mostly stop closures. Against the EmoDB pause labels (see
``bench.accuracy_prosody.pause_figures``), counting gaps from 150 ms found 23 of the 39 labelled
pauses of 200 ms or more, with 3.9 gaps per minute of speech that were no labelled pause; counting
from 200 ms found 22, with 0.3 (``pause_found_from_150ms``, ``pause_false_per_min_from_150ms``,
``pause_found``, ``pause_false_per_min`` of ``python -m bench.accuracy``)."""
PAUSE_MAX_S = 2.0
"""Longest quiet gap counted as a pause: a longer one is the end of a turn (or the other side's);
the pipeline also feeds the agent's prosody at most this long after its voice."""
SILENCE_BELOW_SPEECH_DB = 25.0
"""A pause hop is at least this many dB below the loud voiced level."""
BREATH_ABOVE_FLOOR_DB = 10.0
"""A pause whose loudest 50 ms rise this far above its quiet floor holds an audible breath."""
BREATH_EDGE_HOPS = 8
"""Hops at each end of a pause left out of the breath search (80 ms: the voice's unvoiced onset
and tail)."""
DIGITAL_SILENCE_DBFS = -100.0
"""Hop levels at or below this are fed silence (the pipeline's closed gate), not a noise floor."""
SPECTRAL_LAG_HOPS = 5
"""``HopTrack.spectral_change_db`` compares a hop's spectral shape with the one this many hops
before (50 ms)."""
SPEED_LAG_HOPS = 2
"""``HopTrack.spectral_speed_db`` compares a hop's spectral shape with the one this many hops
before (20 ms: shorter than a phone, so the change grows with the tempo)."""
SPEED_GATE_DB = 35.0
""":func:`spectral_speed` reads the hops (and those 20 ms before them) within this many dB of the
window's loud level (95th percentile): the voice with its quieter consonants, not the noise floor."""
SPEED_MIN_HOPS = 10
"""...and needs this many of them."""
SPEED_CAP_DB = 8.0
"""A hop's change counts at most this much: a high voice's harmonic crossing a narrow low band
jumps 20 dB and more in 20 ms, and a few such hops would read a whole sentence as rushed."""
HESITATION_CHANGE_DB = 1.5
"""A voiced hop whose spectral shape moved less than this in 50 ms is steady (a held vowel or
hum; running speech moves 3 to 6 dB)."""
HESITATION_MIN_S = 0.3
"""Steady voice this long is a hesitation sound: vowels of fluent speech are shorter."""
HESITATION_PITCH_SD_ST = 1.0
"""...on a level pitch: standard deviation under this many semitones."""
HESITATION_BRIDGE_HOPS = 2
"""Breaks of steadiness this short (a glitch of the voicing or of the shape) do not split a sound."""
FILLER_GOES_ON_S = 1.0
"""A hesitation sound is a filled pause when the same voice goes on within this long after it..."""
FILLER_GOES_ON_MIN_S = 0.1
"""...for at least this much voiced time, counted from 100 ms after the sound (a fading vowel's
tail is no going on). A backchannel hum or a drawn-out last word is followed by the other side or
by silence."""


@dataclass(frozen=True)
class Pause:
    """A silent gap between two voiced stretches."""

    start_s: float
    end_s: float
    breath: bool


@dataclass(frozen=True)
class RateWindow:
    """Syllable rate and pauses of one channel over a window: what the pace and pause cues read."""

    voiced_ratio: float
    """Share of hops that are voiced."""
    syllables: int
    articulation_rate_syl_s: float | None
    """See :func:`articulation_rate`."""
    pace_syl_s: float | None
    """See :func:`pace`."""
    pauses: int
    """Silent gaps of 200 ms to 2 s between voiced stretches."""
    pauses_audible: bool = True
    """Whether a pause could be heard at all (see :func:`pauses_audible`): if not, 0 pauses is
    no measurement."""
    spectral_speed_db: float | None = None
    """See :func:`spectral_speed`."""


def pauses_audible(level_dbfs: np.ndarray, voiced: np.ndarray) -> bool:
    """Whether a pause can be told from the voice in these hops: at least 30 ms of live hops (not
    fed silence) lie :data:`SILENCE_BELOW_SPEECH_DB` under the loud voiced level, as the closures
    between words do in a quiet room. Over a noise floor closer to the voice than that, no gap is
    quiet enough to be a pause, and counting none would publish a rate of 0 that nobody measured.

    Args:
        level_dbfs: hop levels, dBFS.
        voiced: hop voicing flags.
    """
    if voiced.sum() < 3:
        return False
    return int((_quiet_hops(level_dbfs, voiced) & (level_dbfs > DIGITAL_SILENCE_DBFS)).sum()) >= 3


def _quiet_hops(level_dbfs: np.ndarray, voiced: np.ndarray) -> np.ndarray:
    """Hops :data:`SILENCE_BELOW_SPEECH_DB` under the loud voiced level (95th percentile), where a
    pause can lie (``voiced`` must hold a voiced hop)."""
    return level_dbfs < percentile(level_dbfs[voiced], 95) - SILENCE_BELOW_SPEECH_DB


def rate_window(t_s: np.ndarray, level_dbfs: np.ndarray, syllabic_db: np.ndarray,
                voiced: np.ndarray, speed_db: np.ndarray) -> RateWindow:
    """The :class:`RateWindow` of a per-hop track (arguments as :func:`syllable_nuclei`,
    :func:`pauses` and :func:`spectral_speed`)."""
    nuclei = syllable_nuclei(t_s, syllabic_db, voiced)
    return RateWindow(voiced_ratio=float(voiced.mean()) if len(voiced) else 0.0, syllables=len(nuclei),
                      articulation_rate_syl_s=articulation_rate(nuclei, t_s),
                      pace_syl_s=pace(nuclei), pauses=len(pause_spans(t_s, level_dbfs, voiced)),
                      pauses_audible=pauses_audible(level_dbfs, voiced),
                      spectral_speed_db=spectral_speed(level_dbfs, speed_db))


def tempo_ratio(pace_ratio: float, speed_ratio: float) -> float:
    """The tempo against the speaker's own: the pace's ratio and the spectral speed's, squared,
    averaged in log.

    The speed moves about half as far as the pace with the tempo, so its square reads on the pace's
    scale; its errors are half the pace's and apart from them, so the mean of the two separates
    speech played 1.3 times faster from the same voice's normal sentences far better than either
    (docs/cues.md).

    Args:
        pace_ratio: the pace (syllables/s) over the speaker's own.
        speed_ratio: the spectral speed (:func:`spectral_speed`) over the speaker's own.

    Returns:
        ``sqrt(pace_ratio) * speed_ratio``.
    """
    return float(np.sqrt(pace_ratio) * speed_ratio)


def spectral_speed(level_dbfs: np.ndarray, speed_db: np.ndarray) -> float | None:
    """How fast the voice's spectrum moves: the mean change of the spectral shape per 20 ms over
    the window's voice (hops within :data:`SPEED_GATE_DB` of its loud level, each change counted at
    most :data:`SPEED_CAP_DB`).

    Played faster, every movement of the spectrum takes less time, so the change over a fixed
    20 ms grows with the tempo: speech time-stretched to 1.3x reads about 1.10 times its own, with
    a spread from sentence to sentence half the syllable pace's, and the two err apart (docs/cues.md).
    Only a ratio to the same voice means anything: voices differ in how much their spectrum moves.

    Args:
        level_dbfs: hop levels, dBFS.
        speed_db: per-hop shape change (``HopTrack.spectral_speed_db``, NaN where absent), dB.

    Returns:
        The mean change in dB, or None with fewer than :data:`SPEED_MIN_HOPS` hops to read.
    """
    lag = SPEED_LAG_HOPS
    if len(level_dbfs) <= lag:
        return None
    gate = level_dbfs > percentile(level_dbfs, 95) - SPEED_GATE_DB
    v = speed_db[lag:][gate[lag:] & gate[:-lag]]
    v = v[np.isfinite(v)]
    return float(np.minimum(v, SPEED_CAP_DB).mean()) if len(v) >= SPEED_MIN_HOPS else None


def percentile(x: np.ndarray, q: float) -> float:
    """``np.percentile(x, q)`` of a non-empty 1-D array (its default, linear method, same
    arithmetic) without its overhead: the box calls it dozens of times a second.

    Args:
        x: the values.
        q: the percentile, 0 to 100.

    Returns:
        The interpolated value.
    """
    s = np.sort(x)
    n = len(s)
    pos = (n - 1) * (q / 100.0)  # numpy's virtual index for the linear method
    lo = min(int(pos), n - 1)
    hi = min(lo + 1, n - 1)
    t = pos - lo
    a, b = s[lo], s[hi]
    return float(b - (b - a) * (1.0 - t) if t >= 0.5 else a + (b - a) * t)


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    if width <= 1 or len(x) < width:
        return x.astype(float)
    pad = width // 2
    xp = np.concatenate([np.full(pad, x[0]), x, np.full(width - 1 - pad, x[-1])])
    return np.convolve(xp, np.full(width, 1.0 / width), mode="valid")


def syllable_nuclei(t_s: np.ndarray, level_dbfs: np.ndarray, voiced: np.ndarray) -> np.ndarray:
    """Times of syllable nuclei in a per-hop track.

    Args:
        t_s: hop centre times, seconds.
        level_dbfs: hop levels, dB; a compressed multi-band envelope (mean band amplitude, as
            ``HopTrack.syllabic_db``) keeps dips between syllables better than a band level.
        voiced: hop voicing flags.

    Returns:
        Nucleus times in seconds, increasing.
    """
    n = len(t_s)
    if n < 3 or not voiced.any():
        return np.zeros(0)
    lev = _smooth(np.where(voiced, level_dbfs, level_dbfs - UNVOICED_PENALTY_DB), SMOOTH_HOPS)
    ref = percentile(level_dbfs[voiced], 95)
    is_peak = np.zeros(n, dtype=bool)
    is_peak[1:-1] = (lev[1:-1] >= lev[:-2]) & (lev[1:-1] > lev[2:])
    cand = np.nonzero(is_peak & voiced & (lev > ref - FLOOR_BELOW_PEAK_DB))[0].tolist()
    levels = lev.tolist()  # the loop reads single values: plain floats cost a tenth of numpy's
    out: list[int] = []
    min_gap = round(MIN_GAP_S / HOP_S)
    for c in cand:
        if out:
            prev = out[-1]
            dip = min(levels[prev:c + 1])
            if levels[c] - dip < DIP_DB or levels[prev] - dip < DIP_DB or c - prev < min_gap:
                if levels[c] > levels[prev] and (c - prev < min_gap or levels[prev] - dip < DIP_DB):
                    out[-1] = c  # the louder of two peaks not separated by a dip
                continue
        out.append(c)
    return t_s[np.asarray(out, dtype=int)] if out else np.zeros(0)


def articulation_rate(nuclei_s: np.ndarray, t_s: np.ndarray) -> float | None:
    """Syllables per second from the first to the last nucleus (plus the last syllable's length).

    Args:
        nuclei_s: nucleus times, seconds.
        t_s: hop centre times of the window, seconds.

    Returns:
        The rate in syllables per second, or ``None`` with fewer than two nuclei.
    """
    if len(nuclei_s) < 2:
        return None
    end = float(t_s[-1]) + HOP_S / 2 if len(t_s) else float(nuclei_s[-1])
    span = min(float(nuclei_s[-1]) + ONSET_TO_NUCLEUS_S, end) - float(nuclei_s[0])
    return len(nuclei_s) / span if span > 0 else None


def pace(nuclei_s: np.ndarray) -> float | None:
    """Syllables per second while the voice runs: the inverse of the mean gap between nuclei.

    Gaps over ``PACE_GAP_MAX_S`` hold a pause or the other side's turn and are left out, so those
    do not dilute the pace (they do dilute :func:`articulation_rate`). Like any nucleus count it
    under-reads faster speech (``pace_tempo_ratio_median`` of ``bench.accuracy_prosody``).

    Args:
        nuclei_s: nucleus times, seconds.

    Returns:
        The pace in syllables per second, or ``None`` with fewer than ``PACE_MIN_GAPS`` gaps of
        running speech.
    """
    gaps_s = np.diff(nuclei_s)
    gaps_s = gaps_s[gaps_s <= PACE_GAP_MAX_S]
    return 1.0 / float(gaps_s.mean()) if len(gaps_s) >= PACE_MIN_GAPS else None


def runs(mask: np.ndarray) -> np.ndarray:
    """(start, end) hop indices of the runs of True in the boolean ``mask``, as an (n, 2) array."""
    padded = np.zeros(len(mask) + 2, dtype=bool)
    padded[1:-1] = mask
    # the flips alternate, a run's start then its end: one row per pair
    return np.flatnonzero(padded[1:] != padded[:-1]).reshape(-1, 2)


def pause_spans(t_s: np.ndarray, level_dbfs: np.ndarray, voiced: np.ndarray,
                min_s: float = PAUSE_MIN_S) -> np.ndarray:
    """The quiet part of each silent gap of 200 ms to 2 s between voiced stretches.

    Args:
        t_s: hop centre times, seconds.
        level_dbfs: hop levels, dBFS.
        voiced: hop voicing flags.
        min_s: the shortest gap counted (:data:`PAUSE_MIN_S`; the accuracy bench also tries less).

    Returns:
        One row per pause, in order: its first quiet hop and the hop after its last, (n, 2).
    """
    if len(t_s) < 3 or voiced.sum() < 3:
        return np.zeros((0, 2), dtype=int)
    quiet = _quiet_hops(level_dbfs, voiced)
    stretches = runs(voiced)
    gap_from = stretches[:-1, 1]  # a voiced stretch ends here...
    gap_to = stretches[1:, 0]  # ...and the next one starts here
    quiet_at = np.nonzero(quiet)[0]
    first = np.searchsorted(quiet_at, gap_from)  # the gap's first quiet hop, as an index of quiet_at
    count = np.searchsorted(quiet_at, gap_to) - first
    ok = count > 0
    a = np.where(ok, quiet_at[np.minimum(first, len(quiet_at) - 1)] if len(quiet_at) else 0, 0)
    b = np.where(ok, quiet_at[np.maximum(first + count - 1, 0)] + 1 if len(quiet_at) else 0, 0)
    dur = (b - a) * HOP_S
    ok &= (dur >= min_s) & (dur <= PAUSE_MAX_S) & (count / np.maximum(gap_to - gap_from, 1) >= 0.6)
    return np.column_stack([a[ok], b[ok]])


def pauses(t_s: np.ndarray, level_dbfs: np.ndarray, voiced: np.ndarray,
           min_s: float = PAUSE_MIN_S) -> list[Pause]:
    """Silent gaps of 200 ms to 2 s between voiced stretches (see :func:`pause_spans`).

    Args:
        t_s: hop centre times, seconds.
        level_dbfs: hop levels, dBFS.
        voiced: hop voicing flags.
        min_s: the shortest gap counted (:data:`PAUSE_MIN_S`).

    Returns:
        The pauses, in order; ``breath`` marks those holding an audible unvoiced breath.
    """
    out: list[Pause] = []
    edge = BREATH_EDGE_HOPS
    for lo, hi in pause_spans(t_s, level_dbfs, voiced, min_s).tolist():  # the quiet part of each gap
        # a breath is a bump inside the pause: the hops next to the voice hold its unvoiced onset
        # and tail, and hops fed as digital silence (a closed gate) are no floor
        inner = level_dbfs[lo + edge:hi - edge]
        live = inner[inner > DIGITAL_SILENCE_DBFS]
        breath = len(live) >= 5 and \
            float(_smooth(live, 5).max()) - percentile(live, 10) >= BREATH_ABOVE_FLOOR_DB
        out.append(Pause(float(t_s[lo] - HOP_S / 2), float(t_s[hi - 1] + HOP_S / 2), breath))
    return out


def hesitations(t_s: np.ndarray, f0_hz: np.ndarray, voiced: np.ndarray,
                change_db: np.ndarray) -> list[tuple[float, float]]:
    """Hesitation sounds: filled pauses ("euh", "um", "mm") and drawn-out syllables.

    A hesitation sound is at least ``HESITATION_MIN_S`` of voice whose spectral shape holds still
    (``HESITATION_CHANGE_DB`` over 50 ms) on a level pitch: a vowel or hum held where fluent
    speech moves on to the next sound. Measured in ``bench.accuracy_prosody.hesitation_figures``.

    Args:
        t_s: hop centre times, seconds.
        f0_hz: hop pitch, 0.0 where unvoiced.
        voiced: hop voicing flags.
        change_db: hop spectral change (``HopTrack.spectral_change_db``, NaN where quiet).

    Returns:
        (start_s, end_s) of each sound, in order.
    """
    n = len(t_s)
    steady = voiced & (change_db < HESITATION_CHANGE_DB)  # NaN compares False, silently
    min_hops = round(HESITATION_MIN_S / HOP_S)
    if np.count_nonzero(steady) < (min_hops - SPECTRAL_LAG_HOPS) // (HESITATION_BRIDGE_HOPS + 1):
        return []  # too few steady hops for one sound, even bridged (most windows of speech)
    # bridge short breaks: a hop between the previous and the next steady hop, close enough
    idx = np.arange(n)
    prev = np.maximum.accumulate(np.where(steady, idx, -1))
    nxt = np.minimum.accumulate(np.where(steady, idx, n)[::-1])[::-1]
    steady |= (prev >= 0) & (nxt < n) & (nxt - prev - 1 <= HESITATION_BRIDGE_HOPS)
    sounds = runs(steady)
    # a sound starts 50 ms before its first steady hop (that hop matched the one 50 ms before),
    # but not inside the sound before it
    sounds[:, 0] = np.maximum(sounds[:, 0] - SPECTRAL_LAG_HOPS, 0)
    sounds[1:, 0] = np.maximum(sounds[1:, 0], sounds[:-1, 1])
    out: list[tuple[float, float]] = []
    for a, b in sounds[sounds[:, 1] - sounds[:, 0] >= min_hops].tolist():
        f0 = f0_hz[a:b]
        f0 = f0[f0 > 0]
        if len(f0) < min_hops // 2:
            continue
        if float(np.std(12.0 * np.log2(f0))) < HESITATION_PITCH_SD_ST:
            out.append((float(t_s[a] - HOP_S / 2), float(t_s[b - 1] + HOP_S / 2)))
    return out


def filled_pauses(sounds: list[tuple[float, float]], t_s: np.ndarray,
                  voiced: np.ndarray) -> list[tuple[float, float]]:
    """The hesitation sounds after which the same voice goes on: "euh... je pense", not "mmm".

    A sound near the track's end is left out until the voice after it is in the track.

    Args:
        sounds: (start_s, end_s) from :func:`hesitations` on the same track.
        t_s: hop centre times, seconds (one voice only: the other side's speech fed as silence).
        voiced: hop voicing flags.

    Returns:
        The sounds that are filled pauses, in order.
    """
    out = []
    for start_s, end_s in sounds:
        after = (t_s > end_s + 0.1) & (t_s <= end_s + FILLER_GOES_ON_S)
        if np.count_nonzero(voiced & after) * HOP_S >= FILLER_GOES_ON_MIN_S - 1e-9:
            out.append((start_s, end_s))
    return out

"""What the far channel carries: speech, call-progress tones, beeps, hold music, silence, no signal.

A cheap numpy stage that runs beside Silero VAD on the line channel. Its only job in the pipeline is a
veto: ringback, busy, beep, music and dead frames are never prospect speech, whatever the VAD says
(Silero fires on music and sometimes on tones). ``speech`` means "may be speech, let the VAD decide":
background noise and IVR prompts (speech by a machine) land there too; this stage does not separate a
recorded voice from a live one. A voicemail greeting is known afterwards, by its beep
(:meth:`edge.conversation.Conversation.voicemail`).

How it decides (frames of 512 samples at 16 kHz, analysed in batches of ``batch_frames``):

* ``dead``: non-finite samples or a flat line (digital zero, stuck DC) for ``dead_frames`` frames.
* tones: one narrow spectral lobe (7 bins of 31 Hz) holds at least ``tone_concentration`` of
  the 250-3500 Hz energy at a stable frequency for ``tone_min_frames`` frames. Lobes within 300-520 Hz
  are call-progress tones (French/ETSI 440/425 Hz, UK 400+450, US 440+480 or 350+440): a burst of at
  least ``busy_max_on_s`` is ``ringback``, shorter bursts are ``busy``; bursts separated by less than
  ``merge_gap_s`` are one burst (the UK double ring). A single lobe at 600-2200 Hz (voicemail beep,
  SIT tones) or a progress tone held longer than ``steady_tone_s`` is ``beep``.
* ``music``: the share of spectral peaks (within ``peak_floor_db`` of the strongest) whose frequency
  stays within ``stable_tol_hz`` over three consecutive frames (sustained notes), averaged over the
  active frames of ``music_window``. Speech pitch moves, so its harmonics rarely stay put for 100 ms
  (measured: at most 0.07 on AMI, EmoDB and headset speech); synthetic notes do (0.55 at the 5th
  percentile). Music without sustained pitched notes (drums, heavy vibrato, sung vocals) is not
  recognised: it falls to ``speech`` and the VAD decides.
* ``silence``: below ``silence_dbfs``; the quiet or digitally silent off periods of a ringback or
  busy cadence keep the tone's label (noisy off periods fall to ``speech``: the VAD decides).

Decisions that need evidence (busy after the burst ends, music after a window) are back-dated:
:attr:`FarEnd.revised` and :attr:`FarEnd.since_frame` tell a caller which earlier frames to relabel;
with ``keep_timeline`` the stage keeps every frame's final label, which is how :func:`classify_clip`
builds its timeline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from edge.frames import FRAME_S, FRAME_SAMPLES, RATE_HZ  # a frame is also the FFT size

log = logging.getLogger(__name__)

BIN_HZ = RATE_HZ / FRAME_SAMPLES
"""Width of an FFT bin of a frame: 31.25 Hz."""

SPEECH, RINGBACK, BUSY, BEEP, MUSIC, SILENCE, DEAD = (
    "speech", "ringback", "busy", "beep", "music", "silence", "dead")
VETO_CLASSES = frozenset({RINGBACK, BUSY, BEEP, MUSIC, DEAD})
"""Classes that must never count as prospect speech (silence is left to the VAD)."""

_LO_BIN = 8  # 250 Hz
_HI_BIN = 113  # 3531 Hz (exclusive)
_LOBE = 3  # half-width of a Hann main lobe plus one bin, in bins


@dataclass(frozen=True)
class FarEndConfig:
    """Thresholds of the far-end classifier (times in seconds, levels in dBFS)."""

    batch_frames: int = 8
    """Frames analysed together (vectorised); the label lags the audio by up to this many frames."""
    dead_frames: int = 3
    """Consecutive flat or non-finite frames before the channel is ``dead``."""
    silence_dbfs: float = -50.0
    """Frame RMS level below which a frame is quiet."""
    tone_concentration: float = 0.9
    """Share of band energy in one lobe of 7 bins (219 Hz) for a frame to be a tone (a dual tone
    such as 350+440 or 400+450 Hz fits in one lobe)."""
    tone_stable_hz: float = 3.0
    """Largest frame-to-frame change of a pure tone's peak frequency."""
    dual_wobble_hz: float = 60.0
    """Peak wobble allowed for two unresolved tones beating (400+450, 440+480 Hz)..."""
    dual_level_db: float = 2.5
    """...provided the frame level changes by less than this..."""
    dual_concentration: float = 0.98
    """...and one lobe holds this share of the band energy (voiced speech rarely does)."""
    tone_min_frames: int = 4
    """Consecutive tone frames before a tone is declared."""
    progress_hz: tuple[float, float] = (300.0, 520.0)
    """Band of call-progress tones (ringback, busy)."""
    beep_hz: tuple[float, float] = (600.0, 2200.0)
    """Band of single beeps (voicemail beep, SIT)."""
    busy_max_on_s: float = 0.75
    """A progress burst shorter than this is busy (or congestion); longer is ringback."""
    merge_gap_s: float = 0.22
    """Bursts separated by a shorter gap are one burst (UK double ring: 0.4 on, 0.2 off, 0.4 on)."""
    burst_end_s: float = 0.25
    """Quiet time after a burst before its length is final."""
    ringback_off_s: float = 5.0
    """Quiet time after a ringback burst still labelled ringback (FR 3.5 s, US 4 s off)."""
    busy_off_s: float = 1.2
    """Quiet time after a busy burst still labelled busy."""
    steady_tone_s: float = 2.6
    """A progress tone held longer than this is a steady tone (``beep``), not a ringback."""
    stable_tol_hz: float = 1.5
    """A spectral peak is sustained if its frequency moves less than this between frames."""
    peak_floor_db: float = 30.0
    """Peaks weaker than the frame's strongest by more than this are ignored."""
    music_window: int = 16
    """Frames averaged for the music decision (0.5 s)."""
    music_on: float = 0.3
    """Mean sustained-peak share over the window that starts music."""
    music_off: float = 0.15
    """Mean sustained-peak share over the last ``music_exit_frames`` that ends music."""
    music_exit_frames: int = 5
    """Recent active frames that must fall below ``music_off`` to leave music."""
    music_pause_s: float = 3.0
    """Quiet time inside music still labelled music."""
    speech_frames: int = 2
    """Consecutive active non-tone frames that end a tone, cadence or silence label."""
    hangover_frames: int = 16
    """Quiet frames inside speech before the label becomes ``silence`` (0.5 s)."""


_LN_DB = np.log(10.0) / 10.0
"""Natural-log units of power per dB: a level ``d`` dB lower is ``log(p) - d * _LN_DB``."""
_BINS = np.arange(_LO_BIN, _HI_BIN, dtype=np.float64)[None, :]


class _Batch:
    """Vectorised per-frame features of a batch of frames (a few dozen numpy calls per batch)."""

    def __init__(self, frames: np.ndarray, prev: np.ndarray, cfg: FarEndConfig,
                 window: np.ndarray) -> None:
        n = frames.shape[0]
        hi = np.maximum.reduce(frames, axis=1)  # NaN and inf propagate
        lo = np.minimum.reduce(frames, axis=1)
        finite = np.isfinite(hi) & np.isfinite(lo)
        if not finite.all():
            frames = np.where(np.isfinite(frames), frames, 0.0)
        self.dead = ~finite | (hi - lo < 1e-6)
        mean = np.add.reduce(frames, axis=1) / frames.shape[1]  # frames.mean(axis=1), less overhead
        power = np.einsum("ij,ij->i", frames, frames) / FRAME_SAMPLES - mean * mean
        self.level_db = 10.0 * np.log10(np.maximum(power, 0.0) + 1e-20)
        nb = _HI_BIN - _LO_BIN
        if not (self.level_db >= cfg.silence_dbfs).any():
            self.c1 = self.f1 = self.sustained = np.zeros(n)
            self.next_prev = np.full((2, nb + 2), np.nan)
            return
        # DC is not removed before the FFT: Hann leakage of DC is below -70 dB at 250 Hz
        spec = np.fft.rfft(frames * window, axis=1)[:, _LO_BIN - 1:_HI_BIN + 1]
        pw = spec.real ** 2 + spec.imag ** 2 + 1e-30  # (n, nb + 2): one bin of margin each side
        band = pw[:, 1:-1]
        cz = np.zeros((n, nb + 1))
        np.cumsum(band, axis=1, out=cz[:, 1:])
        rows = np.arange(n)
        k1 = band.argmax(axis=1)
        centre = np.minimum(np.maximum(k1, _LOBE), nb - _LOBE - 1)  # np.clip, less overhead
        self.c1 = (cz[rows, centre + _LOBE + 1] - cz[rows, centre - _LOBE]) / cz[:, -1]
        logp = np.log(pw)
        left, mid, right = logp[:, :-2], logp[:, 1:-1], logp[:, 2:]
        with np.errstate(divide="ignore", invalid="ignore"):
            # parabolic interpolation: finite and within half a bin at every local maximum
            freq = (_BINS + 0.5 * (left - right) / (left - 2.0 * mid + right)) * BIN_HZ
        self.f1 = freq[rows, k1]
        # sustained peaks: local maxima within peak_floor_db of the frame's strongest whose
        # frequency matched a peak of the frame before, which itself matched the one before that
        floor = logp[rows, k1 + 1][:, None] - cfg.peak_floor_db * _LN_DB
        peak = (mid > left) & (mid >= right) & (mid > floor)
        allf = np.full((n + 2, nb + 2), np.nan)
        allf[:2] = prev
        allf[2:, 1:-1] = np.where(peak, freq, np.nan)
        cur = allf[1:, 1:-1]
        tol = cfg.stable_tol_hz
        with np.errstate(invalid="ignore"):
            match = ((np.abs(cur - allf[:-1, :-2]) < tol) | (np.abs(cur - allf[:-1, 1:-1]) < tol)
                     | (np.abs(cur - allf[:-1, 2:]) < tol))
        mp = np.zeros((n + 1, nb + 2), dtype=bool)
        mp[:, 1:-1] = match
        sustained = match[1:] & (mp[:-1, :-2] | mp[:-1, 1:-1] | mp[:-1, 2:])
        self.sustained = sustained.sum(axis=1) / np.maximum(peak.sum(axis=1), 1)
        self.next_prev = allf[-2:]


class FarEnd:
    """Classifies the far channel frame by frame: call ``__call__`` with each 512-sample frame.

    Args:
        config: thresholds (see :class:`FarEndConfig`).
        keep_timeline: keep every frame's label, back-dated decisions applied (offline use).
    """

    def __init__(self, config: FarEndConfig = FarEndConfig(), keep_timeline: bool = False) -> None:
        self.config = config
        self.keep_timeline = keep_timeline
        self._window = np.hanning(FRAME_SAMPLES + 2)[1:-1]
        self.reset()

    def reset(self) -> None:
        """Forget everything: back to ``silence`` at frame 0."""
        self.label = SILENCE
        """Current class (one of the seven above, the wire's ``FAR_KINDS``)."""
        self.since_frame = 0
        """Frame index (from 0) where the current label starts, back-dated when confirmed late."""
        self.revised: list[tuple[int, str]] = []
        """Decisions back-dated by the last call: (first frame index, label), in order; the label
        holds from that frame up to the next change (see :attr:`timeline` for exact spans)."""
        self.timeline: list[str] = []
        """Every analysed frame's label (only with ``keep_timeline``)."""
        self.frames = 0
        self._batch = np.empty((max(1, self.config.batch_frames), FRAME_SAMPLES))
        """Frames waiting for analysis (the first ``_pending_n`` rows), as float64."""
        self._pending_n = 0
        self._prev = np.full((2, _HI_BIN - _LO_BIN + 2), np.nan)
        self._dead_run = 0
        self._quiet_run = 0
        self._active_run = 0
        self._active_start = 0
        # tones
        self._tone_kind: str | None = None  # "progress" | "beep" for the current candidate run
        self._tone_run = 0
        self._tone_start = 0
        self._tone_f = 0.0
        self._tone_f0 = 0.0
        self._tone_level = 0.0
        self._burst_start: int | None = None  # first frame of the current progress burst
        self._burst_last = -10**9  # last tone frame of the last progress burst
        self._cadence: str | None = None  # ringback or busy, while a cadence is running
        # music
        self._sust: list[float] = []
        self._active: list[bool] = []
        self._music = False

    @property
    def veto(self) -> bool:
        """True when the current class must not count as prospect speech."""
        return self.label in VETO_CLASSES

    def __call__(self, samples_512: np.ndarray) -> str:
        """Add one frame of far-channel audio; return the current class.

        Args:
            samples_512: 512 float samples at 16 kHz, full scale +-1.0 (NaN and inf are tolerated).

        Returns:
            The class of the audio analysed so far (lags by up to ``batch_frames`` frames).
        """
        frame = np.asarray(samples_512)
        if frame.size != FRAME_SAMPLES:
            raise ValueError(f"expected {FRAME_SAMPLES} samples, got {frame.size}")
        k = self._pending_n
        self._batch[k] = frame.reshape(-1)  # converted to float64 in place
        self._pending_n = k = k + 1
        self.revised = []
        if k >= self._batch.shape[0]:
            self._pending_n = 0
            self._analyse(self._batch)
        return self.label

    def flush(self) -> str:
        """Analyse frames still buffered (end of a clip); return the current class."""
        self.revised = []
        if self._pending_n:
            k, self._pending_n = self._pending_n, 0
            self._analyse(self._batch[:k])
        return self.label

    # -- decisions ---------------------------------------------------------------------------
    def _analyse(self, frames: np.ndarray) -> None:
        b = _Batch(frames, self._prev, self.config, self._window)
        self._prev = b.next_prev
        cols = zip(b.dead.tolist(), b.level_db.tolist(), b.c1.tolist(), b.f1.tolist(),
                   b.sustained.tolist(), strict=True)
        for dead, level, c1, f1, sust in cols:
            self._step(dead, level, c1, f1, sust)
            if self.keep_timeline:
                self.timeline.append(self.label)
            self.frames += 1

    def _set(self, label: str, since: int | None = None) -> None:
        i = self.frames if since is None else since
        if since is not None and since < self.frames:
            self.revised.append((since, label))
            if self.keep_timeline:
                for k in range(max(since, 0), len(self.timeline)):
                    self.timeline[k] = label
        if label != self.label or since is not None:
            if label != self.label:
                log.debug("far end: %s -> %s at frame %d", self.label, label, i)
            self.label = label
            self.since_frame = i

    def _steady(self, f1: float, level: float, c1: float) -> bool:
        """True if this tone frame continues the current run: same pure frequency, or a beating
        dual tone (peak wobbles) at a steady level."""
        cfg = self.config
        if abs(f1 - self._tone_f) <= cfg.tone_stable_hz:
            return True
        return (c1 >= cfg.dual_concentration and abs(f1 - self._tone_f0) <= cfg.dual_wobble_hz
                and abs(level - self._tone_level) <= cfg.dual_level_db)

    def _relabel(self, first: int, end: int, label: str) -> None:
        """Back-date ``label`` over frames [first, end) without changing the current label."""
        self.revised.append((first, label))
        if self.keep_timeline:
            for k in range(first, min(end, len(self.timeline))):
                self.timeline[k] = label

    def _tone_class(self, c1: float, f1: float) -> str | None:
        cfg = self.config
        if c1 < cfg.tone_concentration:
            return None
        if cfg.progress_hz[0] <= f1 <= cfg.progress_hz[1]:
            return "progress"
        if cfg.beep_hz[0] <= f1 <= cfg.beep_hz[1]:
            return "beep"
        return None

    def _step(self, dead: bool, level: float, c1: float, f1: float, sust: float) -> None:
        cfg = self.config
        i = self.frames
        # dead line
        if dead:
            self._dead_run += 1
            self._active_run = 0
            self._push_music(0.0, False)
            if self._in_cadence(i):  # digital silence between bursts (VoIP silence suppression)
                self._tone_kind, self._tone_run = None, 0
                self._end_burst(i)
                return
            if self._dead_run >= cfg.dead_frames and self.label != DEAD:
                self._reset_context()
                self._set(DEAD, max(i - self._dead_run + 1, self._cadence_end()))
            return
        self._dead_run = 0
        quiet = level < cfg.silence_dbfs
        kind = None if quiet else self._tone_class(c1, f1)
        # tone candidate runs with a stable frequency
        if kind is not None and kind == self._tone_kind and self._steady(f1, level, c1):
            self._tone_run += 1
        elif kind is not None:
            self._tone_kind, self._tone_run, self._tone_start = kind, 1, i
            self._tone_f0 = f1
        else:
            self._tone_kind, self._tone_run = None, 0
        self._tone_f, self._tone_level = f1, level
        self._push_music(sust, not quiet and kind is None)
        if self._tone_run >= cfg.tone_min_frames:
            self._on_tone(i)
            return
        if kind is not None:
            self._active_run = 0
            return  # a tone frame not yet confirmed: hold the label
        self._end_burst(i)
        if quiet:
            self._active_run = 0
            self._quiet_run += 1
            if self.label == DEAD:
                self._set(SILENCE)
            elif self.label in (RINGBACK, BUSY) and not self._in_cadence(i):
                self._cadence = None
                self._set(SILENCE)
            elif self.label == BEEP:
                self._set(SILENCE)
            elif self.label == MUSIC and self._quiet_run * FRAME_S > cfg.music_pause_s:
                self._music = False
                self._set(SILENCE)
            elif self.label == SPEECH and self._quiet_run >= cfg.hangover_frames:
                self._set(SILENCE)
            return
        # active, not a (confirmed) tone
        self._quiet_run = 0
        if self._active_run == 0:
            self._active_start = i
        self._active_run += 1
        if self._music_update(i):
            return
        if self.label != SPEECH and self._active_run >= cfg.speech_frames:
            self._cadence = None
            self._set(SPEECH, self._active_start)

    def _cadence_end(self) -> int:
        """First frame after the off period of the current ringback or busy label."""
        if self.label not in (RINGBACK, BUSY):
            return 0
        cfg = self.config
        limit = cfg.ringback_off_s if self.label == RINGBACK else cfg.busy_off_s
        return self._burst_last + 1 + int(limit / FRAME_S)

    def _in_cadence(self, i: int) -> bool:
        """True while frame ``i`` is within the off period of a ringback or busy cadence."""
        return self.label in (RINGBACK, BUSY) and i < self._cadence_end()

    def _reset_context(self) -> None:
        self._cadence = None
        self._burst_start = None
        self._music = False
        self._sust.clear()
        self._active.clear()

    def _on_tone(self, i: int) -> None:
        cfg = self.config
        self._quiet_run = 0
        self._active_run = 0
        self._music = False
        if self._tone_kind == "beep":
            self._burst_start = None
            if self.label != BEEP:
                self._set(BEEP, self._tone_start)
            return
        # progress tone: a ringback until the burst proves short (see _end_burst)
        if self._burst_start is None:
            self._burst_start = self._tone_start
        self._burst_last = i
        on_s = (i - self._burst_start + 1) * FRAME_S
        if on_s > cfg.steady_tone_s:
            if self.label != BEEP:
                self._cadence = None
                self._set(BEEP, self._burst_start)
        elif on_s >= cfg.busy_max_on_s:
            if self.label != RINGBACK:
                self._set(RINGBACK, self._burst_start)
        elif self.label not in (RINGBACK, BUSY):
            self._set(self._cadence or RINGBACK, self._tone_start)

    def _end_burst(self, i: int) -> None:
        """Close a progress burst once it has been quiet for ``burst_end_s``; fix its class."""
        cfg = self.config
        if self._burst_start is None:
            return
        gap_s = (i - self._burst_last) * FRAME_S
        if gap_s < max(cfg.burst_end_s, cfg.merge_gap_s):
            return
        on_s = (self._burst_last - self._burst_start + 1) * FRAME_S
        kind = BUSY if on_s < cfg.busy_max_on_s else RINGBACK
        start = self._burst_start
        self._burst_start = None
        self._cadence = kind
        if self.label in (RINGBACK, BUSY) and self.label != kind:
            self._set(kind, start)
        elif kind == BUSY:  # the label moved on already: fix the burst itself
            self._relabel(start, self._burst_last + 1, kind)

    def _push_music(self, sust: float, active: bool) -> None:
        self._sust.append(sust if active else 0.0)
        self._active.append(active)
        if len(self._sust) > self.config.music_window:
            del self._sust[0]
            del self._active[0]

    def _music_update(self, i: int) -> bool:
        """Update the music state on an active frame; return True if the frame is music."""
        cfg = self.config
        act = [s for s, a in zip(self._sust, self._active, strict=True) if a]
        if self._music:
            recent = act[-cfg.music_exit_frames:]
            if len(recent) >= cfg.music_exit_frames and sum(recent) / len(recent) < cfg.music_off:
                self._music = False
                self._set(SPEECH, max(self._active_start, i - cfg.music_exit_frames + 1))
                return True
            if self.label != MUSIC:
                self._set(MUSIC)
            return True
        if len(act) >= cfg.music_window // 2 and len(self._sust) >= cfg.music_window and \
                sum(act) / len(act) >= cfg.music_on:
            self._music = True
            self._cadence = None
            self._set(MUSIC, max(0, i - cfg.music_window + 1))
            return True
        return False


def classify_clip(samples: np.ndarray, rate_hz: int,
                  config: FarEndConfig = FarEndConfig()) -> list[tuple[float, float, str]]:
    """Classify a whole far-channel recording offline, back-dating late decisions.

    Args:
        samples: mono float samples, full scale +-1.0.
        rate_hz: sample rate of ``samples``; resampled to 16 kHz if different.
        config: thresholds.

    Returns:
        Contiguous segments ``(start_s, end_s, label)`` covering the whole frames of the clip.
    """
    labels = frame_labels(samples, rate_hz, config)
    segments: list[tuple[float, float, str]] = []
    start = 0
    for j in range(1, len(labels) + 1):
        if j == len(labels) or labels[j] != labels[start]:
            segments.append((round(start * FRAME_S, 3), round(j * FRAME_S, 3), labels[start]))
            start = j
    return segments


def frame_labels(samples: np.ndarray, rate_hz: int,
                 config: FarEndConfig = FarEndConfig()) -> list[str]:
    """Per-frame classes (32 ms frames at 16 kHz) of a whole recording, late decisions back-dated."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if rate_hz != RATE_HZ:
        from edge.source import resample

        x = resample(x, rate_hz, RATE_HZ)
    stage = FarEnd(config, keep_timeline=True)
    for j in range(len(x) // FRAME_SAMPLES):
        stage(x[j * FRAME_SAMPLES:(j + 1) * FRAME_SAMPLES])
    stage.flush()
    return stage.timeline

"""Posture cues: what a native supervisor would tell the agent, with hysteresis and no nagging.

:class:`Signals` is fed once per metrics window (a :class:`Tick`: the window's metrics, the agent's
prosody over a short and a long window, the time the agent's channel has been digitally flat) and
with every conversation event as it is produced; it returns ``cue_on`` / ``cue_off`` event bodies.

Every cue has a start condition that must hold for a minimum time, an end condition with a
hysteresis band, a cooldown after it ends, and all cues share a per-agent budget per rolling hour.
Nothing is raised while the line is on hold (explicit call state, hold music, a dead line or a long
silent line), while the agent's headset is muted (digital silence on the near channel), or outside
a call. Baseline-relative cues (rate, monotone, low energy) wait until the agent's own baseline is
learned. Agent cues are behavioural and physical (pace, pauses, pitch movement, loudness, turn
taking); no emotion is ever derived from the agent's voice. Prospect cues use the far channel only.

Labels in French and English are in :data:`CUES`; defaults are justified in ``docs/cues.md``.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.campaign import CampaignConfig
from edge.prosody import ProsodyWindow
from edge.rate import RateWindow, tempo_ratio


@dataclass(frozen=True)
class CueInfo:
    """What a cue is: its channel, its labels and the unit of its evidence."""

    channel: str
    """``near`` for the agent's cues, ``far`` for the prospect's."""
    en: str
    fr: str
    unit: str
    """Unit of ``evidence_value`` and ``evidence_threshold``."""


CUES: dict[str, CueInfo] = {
    "too_fast": CueInfo("near", "Slow down", "Ralentissez", "ratio"),
    "too_slow": CueInfo("near", "Pick up the pace", "Accélérez un peu", "ratio"),
    "monologue": CueInfo("near", "Let the prospect speak", "Laissez parler le prospect", "s"),
    "no_pause": CueInfo("near", "Pause and breathe", "Faites une pause, respirez", "s"),
    "monotone": CueInfo("near", "Vary your tone", "Variez votre intonation", "ratio"),
    "talking_over": CueInfo("near", "Don't talk over the prospect",
                            "Ne coupez pas la parole au prospect", "s"),
    "slow_response": CueInfo("near", "The prospect is waiting for you",
                             "Le prospect attend votre réponse", "s"),
    "low_energy": CueInfo("near", "Speak up, more energy", "Plus d'énergie dans la voix", "db"),
    "prospect_hesitating": CueInfo("far", "Prospect hesitating", "Le prospect hésite", "answers"),
    "prospect_tense": CueInfo("far", "Prospect tense", "Le prospect est tendu", "ratio"),
    "take_break": CueInfo("near", "Take a short break", "Prenez une courte pause", "index"),
}
"""Every cue id (the wire's ``cue`` enum) with its labels; ``take_break`` comes from the fatigue stage."""

SEVERITIES = ("low", "medium", "high")
TENSION_HOLD_S = 1.5
"""The affect model reads the prospect about once a second (``edge.affect.AffectConfig.hop_frames``):
a window without a new value keeps the last one this long (0.5 s windows alternate)."""
FAR_HOLD_KINDS = frozenset({"music", "dead"})
"""Far-end kinds that mean the line is on hold or gone: no cue."""
FAR_TONE_KINDS = frozenset({"busy", "ringback"})
PERSON_CUES = frozenset({"talking_over", "slow_response", "prospect_hesitating", "prospect_tense"})
"""Cues that read the far end as a person: a voicemail's call gives them back (its greeting is no
prospect to talk over, keep waiting or read)."""
FAR_TONE_HOLD_S = 3.0
"""Call-progress tones held this long mean nobody is on the line (hung up, not answered yet): no
cue. One tone-like burst is not enough: a high voice holding a vowel can look like one."""


@dataclass
class Tick:
    """One metrics window's inputs to :class:`Signals`."""

    t_s: float
    """Audio time at the window's end, seconds."""
    metrics: dict[str, Any]
    """The window's metrics body (conversation figures, ``far_kind``, ``prospect_tension``...)."""
    short: RateWindow | None = None
    """The agent's rate and pauses over the fast-rate window (``too_fast.window_s``)."""
    slow: RateWindow | None = None
    """The agent's rate over the slow-rate window (``too_slow.window_s``)."""
    long: ProsodyWindow | None = None
    """The agent's prosody over the metrics' prosody window (pitch range, loudness)."""
    near_flat_s: float = 0.0
    """How long the agent's channel has been digitally flat (headset mute), seconds."""
    voice_t0_s: float = 0.0
    """Audio time of the windows' own time 0 (the prosody stage starts again at 0 after private
    mode or a lost device), seconds."""
    far_filled_pauses_s: tuple[tuple[float, float], ...] = ()
    """The prospect's filled pauses over the prosody window, (start, end) in the windows' own time
    (:attr:`edge.prosody.ProsodyWindow.filled_pauses_s`)."""
    far_answers: tuple[tuple[float, float], ...] = ()
    """The prospect's answers since the last window, each once: (start, latency), audio seconds
    (:meth:`edge.conversation.Conversation.take_responses`; an answer split by a pause starts
    with its first words)."""


@dataclass
class _Answer:
    """One answer of the prospect: the silence before it, and whether it held a filled pause."""

    latency_s: float
    start_s: float
    """Audio time the answer began, seconds."""
    filled_pause: bool = False


@dataclass
class _Active:
    cue: str
    start_s: float
    severity: str
    value: float
    threshold: float


@dataclass
class _Timer:
    """How long a condition has held (or its release has held)."""

    on_s: float = 0.0
    off_s: float = 0.0

    def step(self, on: bool, off: bool, dt_s: float) -> None:
        self.on_s = self.on_s + dt_s if on else 0.0
        self.off_s = self.off_s + dt_s if off else 0.0


@dataclass
class AgentBaseline:
    """The agent's own typical pace, spectral speed, pitch range and loudness, learned from the
    first speech."""

    pace_syl_s: list[float] = field(default_factory=list)
    spectral_speed_db: list[float] = field(default_factory=list)
    pitch_range_st: list[float] = field(default_factory=list)
    level_dbfs: list[float] = field(default_factory=list)
    speech_s: float = 0.0

    def ready(self, need_s: float) -> bool:
        """Whether enough speech was seen (and every measure has samples)."""
        return self.speech_s >= need_s and all(len(getattr(self, n)) >= 5 for n in BASELINE_MEASURES)

    def value(self, name: str) -> float:
        """Median of one measure."""
        return float(statistics.median(getattr(self, name)))

    def as_dict(self) -> dict[str, float]:
        """The learned medians (to persist for the agent's next shift)."""
        return {n: self.value(n) for n in BASELINE_MEASURES if getattr(self, n)}

    @classmethod
    def from_dict(cls, values: dict[str, Any], speech_s: float = 3600.0) -> AgentBaseline:
        """A baseline loaded from a previous shift's :meth:`as_dict`.

        A complete one is ready at once. One that lacks a measure (a file from an older version)
        is learned again over the usual baseline speech, its values counting as five windows: a
        measure relearned from five windows would read a greeting as the agent's habit.

        Raises:
            ValueError: a value is not a number, not finite, a rate or range not positive, or a
                level above full scale.
        """
        out: dict[str, list[float]] = {}
        for n in BASELINE_MEASURES:
            if n not in values:
                continue
            raw = values[n]
            v = float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else math.nan
            out_of_range = v > 0.0 if n == "level_dbfs" else v <= 0.0
            if not math.isfinite(v) or out_of_range:
                raise ValueError(f"agent baseline {n} = {raw!r}")
            out[n] = [v] * 5
        return cls(**out, speech_s=speech_s if len(out) == len(BASELINE_MEASURES) else 0.0)


BASELINE_MEASURES = ("pace_syl_s", "spectral_speed_db", "pitch_range_st", "level_dbfs")
"""What :class:`AgentBaseline` learns (a file from an older version may lack some, the spectral
speed for one: they are relearned; its ``rate_syl_s``, which no cue reads since both rate cues read
the pace, is ignored)."""


VOICED_MIN = 0.2
"""A prosody window counts for the baseline and the voice cues only when this share is voiced."""
RATE_VOICED_MIN = 0.35
RATE_MIN_SYLLABLES = 8
"""A rate window counts only with this much voice and this many syllable nuclei (a turn's edge
holds a few syllables and gives rates far off in either direction)."""


def _rated(win: RateWindow | None) -> RateWindow | None:
    """The window if it holds enough voice and syllables for a rate, else ``None``."""
    if win is None or win.voiced_ratio < RATE_VOICED_MIN or win.syllables < RATE_MIN_SYLLABLES:
        return None
    return win


class Signals:
    """Posture cues of the agent and the prospect from per-second inputs; no I/O.

    Args:
        campaign: thresholds, hysteresis, cooldowns and the alert budget.
        baseline: the agent's baseline from a previous shift (learned from the first speech if None).
    """

    def __init__(self, campaign: CampaignConfig | None = None,
                 baseline: AgentBaseline | None = None) -> None:
        self.campaign = campaign or CampaignConfig()
        self._loaded = baseline
        self.reset()

    # ------------------------------------------------------------------------------ state
    def reset(self) -> None:
        """A new shift: forget the baseline (unless loaded), the budget and every cue."""
        self.baseline = AgentBaseline.from_dict(self._loaded.as_dict(), self._loaded.speech_s) \
            if self._loaded else AgentBaseline()
        self._raised: deque[float] = deque()
        self.suppressed_by_budget = 0
        self._hold_explicit = False
        self._last_off: dict[str, float] = {}
        self.reset_call()

    def reset_call(self, keep_cooldowns: bool = False) -> None:
        """Forget everything about the current call; the cooldowns too unless ``keep_cooldowns``
        (private mode restarts them; an audio device that comes back does not)."""
        self.active: dict[str, _Active] = {}
        if not keep_cooldowns:
            self._last_off = {}
        self._refused: set[str] = set()
        """Cues refused by the budget whose condition has held since (counted once)."""
        self._speaking = {"near": False, "far": False}
        self._far_silent_s = 0.0
        self._far_tone_s = 0.0
        self._in_call = False
        self._ended = False
        """The call-state input ended the call, whose ``call_end`` has not come yet."""
        self._why = "idle"
        self._live_since_s = math.inf
        """Start of the current stretch in which cues may be raised (no hold, mute, idle)."""
        self._answers_from_s = -math.inf
        """Answers that started before this belong to no call or to an earlier one (audio s)."""
        self._new_call()
        self._reset_summary()

    def _new_call(self) -> None:
        """Forget the evidence gathered in the previous call (at a call's start and end); the
        cooldowns and the budget carry over, so a new call does not bring the same cue straight back."""
        self._timers: dict[str, _Timer] = {c: _Timer() for c in CUES}
        self._open_overlap_s: float | None = None
        self._talk_over_until = -math.inf
        self._talk_over_value = 0.0
        self._talk_over_threshold = self.campaign.talking_over.min_overlap_s
        self._last_end: dict[str, float | None] = {"near": None, "far": None}
        self._run_s = 0.0
        self._run_speech_s = 0.0
        keep = max(1, self.campaign.prospect_hesitating.responses)
        self._answers: deque[_Answer] = deque(maxlen=keep)
        """The prospect's last answers in the call."""
        self._tension: tuple[float, float] | None = None
        """The prospect's last tension and when it came (audio s)."""
        self._near_starts: deque[float] = deque(maxlen=8)
        """The agent's last speech starts while the prospect was silent, audio s (an answer ends
        at the first after it)."""

    def elapse(self, seconds: float) -> None:
        """Time passed without audio (a lost headset): the budget's hour and the cooldowns run
        on the audio clock, which did not advance, so what they remember moves back by it."""
        self._raised = deque(t - seconds for t in self._raised)
        self._last_off = {cue: t - seconds for cue, t in self._last_off.items()}

    def close(self, t_s: float) -> list[dict[str, Any]]:
        """End every open cue now (before private mode); return their ``cue_off`` bodies."""
        return [self._off(cue, t_s) for cue in list(self.active)]

    def _reset_summary(self, call_start_s: float = math.inf) -> None:
        self._call_start_s = call_start_s
        self._episodes: list[list[Any]] = []
        """The call's cue episodes: [cue, start_s, end_s or None while on, the cue's last end
        before it (its cooldown's start) or None]."""
        self._rates: list[float] = []
        self._f0: list[float] = []
        self._ranges: list[float] = []
        self._levels: list[float] = []

    def keep_baseline(self) -> None:
        """From the next :meth:`reset` on, start from the baseline learned so far (a new shift)."""
        if self.baseline.ready(self.campaign.alerts.baseline_speech_s):
            self._loaded = AgentBaseline.from_dict(self.baseline.as_dict())

    def forget_baseline(self) -> None:
        """From the next :meth:`reset` on, learn the baseline afresh."""
        self._loaded = None

    def hold(self, on: bool) -> None:
        """Explicit hold from the call-state input (softphone or CTI connector)."""
        self._hold_explicit = on

    def ended(self) -> None:
        """The softphone or CTI connector ended the call: no cue from now (its ``call_end``
        reaches :meth:`event` a few frames later, when the conversation stage has caught up)."""
        self._ended = True

    # ------------------------------------------------------------------------------ events
    def event(self, body: dict[str, Any], t_s: float) -> list[dict[str, Any]]:
        """Take one conversation or gate event as it is produced; return cue events to emit first.

        ``call_end`` closes every open cue (returned as ``cue_off`` bodies) and gets the call's cue
        counts and durations and rate and pitch statistics added to ``body`` in place.

        Args:
            body: the event body (``name``, ``channel``, ``t_audio_s``...).
            t_s: audio time the pipeline has reached, seconds.

        Returns:
            ``cue_off`` bodies to publish before ``body``.
        """
        name, ch = body.get("name"), body.get("channel")
        t = float(body.get("t_audio_s", t_s))
        out: list[dict[str, Any]] = []
        if name == "speech_start" and ch in self._speaking:
            self._speaking[ch] = True
            if ch == "near" and not self._speaking["far"]:  # not a "mm-hm" over the prospect
                self._near_starts.append(t)
        elif name == "speech_end" and ch in self._speaking:
            self._speaking[ch] = False
            self._last_end[ch] = t
        elif name == "overlap_start" and ch == "near":
            self._open_overlap_s = t
        elif name == "overlap_end":
            long_enough = float(body.get("duration_s", 0.0)) >= self.campaign.talking_over.min_overlap_s
            if ch == "near" and long_enough:
                self._talking_over(float(body["duration_s"]))
            self._open_overlap_s = None
        elif name == "interruption" and ch == "near":  # the prospect yielded: any length counts
            self._talking_over(float(body.get("duration_s", 0.0)), interruption=True)
        elif name == "call_start":
            self._in_call, self._ended = True, False
            self._answers_from_s = t
            self._new_call()
            self._reset_summary(t)
        elif name == "call_end":
            self._in_call = False
            self._answers_from_s = math.inf  # (an ended call's answers are handed over late)
            out += self.close(t_s)
            self._give_back(t, body.get("call_end_reason") == "voicemail")
            body.update(self.summary(t))  # a call's end is known late: what came after is not its
            self._new_call()
        return out

    def _give_back(self, end_s: float, voicemail: bool = False) -> None:
        """Cues that were about no person in a call go back to the hourly budget and their
        cooldowns, and out of the call's summary: those raised after the call's end (a quiet line
        is known to be a hang-up only 20 s late) and, in a voicemail, those that read the far end
        as a person (:data:`PERSON_CUES`: the greeting is known to be one only at its beep)."""
        kept, given = [], set()
        for episode in self._episodes:
            cue, start_s, _, before = episode
            if start_s < end_s and not (voicemail and cue in PERSON_CUES):
                kept.append(episode)
                continue
            if start_s in self._raised:
                self._raised.remove(start_s)
            if cue not in given:  # its first episode given back: the cooldown it started from
                given.add(cue)
                if before is None:
                    self._last_off.pop(cue, None)
                else:
                    self._last_off[cue] = before
        self._episodes = kept

    def _talking_over(self, value_s: float, interruption: bool = False) -> None:
        """Raise 'talking over' at the next tick: the evidence is the overlap's length, against
        ``min_overlap_s`` for an overlap, against 0 for an interruption (its length aside)."""
        self._talk_over_until = math.inf  # raised at the next tick, then held for show_s
        self._talk_over_value = max(self._talk_over_value, value_s)
        if interruption and self._talk_over_value < self.campaign.talking_over.min_overlap_s:
            self._talk_over_threshold = 0.0
        else:
            self._talk_over_threshold = self.campaign.talking_over.min_overlap_s

    def summary(self, end_s: float = math.inf) -> dict[str, float | int]:
        """The current call's cue counts and durations, rate and pitch statistics (``call_*``).

        Args:
            end_s: the call's end, seconds of audio: cues raised after it are not the call's, and
                the cues still on then count up to it.
        """
        cue_n = {c: 0 for c in CUES}
        cue_s = {c: 0.0 for c in CUES}
        for cue, start_s, off_s, _ in self._episodes:
            if start_s < end_s:
                cue_n[cue] += 1
                cue_s[cue] += min(end_s if off_s is None else off_s, end_s) - start_s
        out: dict[str, float | int] = {"call_cues": sum(cue_n[c] for c in CUES if c != "take_break")}
        for c in CUES:
            if c == "take_break":
                continue
            out[f"call_cue_{c}_n"] = cue_n[c]
            out[f"call_cue_{c}_s"] = round(cue_s[c], 1)
        for key, values in (("rate_syl_s", self._rates), ("f0_hz", self._f0),
                            ("pitch_range_st", self._ranges), ("level_dbfs", self._levels)):
            if values:
                out[f"call_{key}_median"] = round(float(np.median(values)), 3)
        if len(self._rates) >= 3:
            out["call_rate_syl_s_p10"] = round(float(np.percentile(self._rates, 10)), 3)
            out["call_rate_syl_s_p90"] = round(float(np.percentile(self._rates, 90)), 3)
        return out

    # ------------------------------------------------------------------------------ ticks
    def __call__(self, tick: Tick) -> list[dict[str, Any]]:
        """Take one metrics window; return the ``cue_on`` / ``cue_off`` bodies it produced."""
        m = tick.metrics
        dt = float(m.get("window_s", 1.0))
        now = tick.t_s
        far_quiet = m.get("far_kind") == "silence" and not m.get("near_talking", False) \
            and float(m.get("near_speech_ratio", 0.0)) == 0.0
        self._far_silent_s = self._far_silent_s + dt if far_quiet else 0.0
        self._far_tone_s = self._far_tone_s + dt if m.get("far_kind") in FAR_TONE_KINDS else 0.0
        out: list[dict[str, Any]] = []
        # every answer of this call counts, also one given while cues are held back (the agent
        # muted); answers come at the window's end, after a call end and start in the window
        self._answers.extend(_Answer(latency_s, start_s) for start_s, latency_s in tick.far_answers
                             if start_s >= self._answers_from_s)
        why = self._why = self.suppressed(tick)
        if why not in ("", "budget"):
            self._live_since_s = math.inf
        elif self._live_since_s == math.inf:
            self._live_since_s = now - dt  # live from this window's start
        if why in ("", "budget"):  # not on hold, muted or out of a call: the agent's own voice
            self._learn(tick)
        if why:
            for cue in list(self.active):
                out.append(self._off(cue, now))
            for timer in self._timers.values():
                timer.step(False, False, dt)
            self._talk_over_until = -math.inf
            self._talk_over_value = 0.0
            self._run_s = self._run_speech_s = 0.0
            return out
        conditions = self._conditions(tick, now)
        for cue, timer in self._timers.items():
            if cue not in conditions and cue not in self.active:  # no evidence: the start clock
                timer.step(False, False, dt)                      # starts over
        for cue in self.active:
            if cue not in conditions:  # no evidence this window (no voice): the release clock runs
                act = self.active[cue]
                min_off = float(getattr(getattr(self.campaign, cue, None), "min_off_s", 0.0))
                conditions[cue] = (act.value, act.threshold, False, True, 0.0, min_off, act.severity)
        for cue, (value, threshold, on, off, min_on, min_off, sev) in conditions.items():
            timer = self._timers[cue]
            timer.step(on, off, dt)
            if not on:
                self._refused.discard(cue)
            if cue in self.active:
                act = self.active[cue]
                if off and timer.off_s >= min_off:
                    out.append(self._off(cue, now))
                elif on and SEVERITIES.index(sev) > SEVERITIES.index(act.severity):
                    # escalation (a monologue past high_s): the same episode, sent again as high
                    act.severity, act.value = sev, value
                    out.append(cue_event("cue_on", cue, now, sev, value, threshold))
            elif on and timer.on_s >= min_on:
                ev = self._on(cue, now, sev, value, threshold)
                if ev is not None:
                    out.append(ev)
        return out

    def suppressed(self, tick: Tick) -> str:
        """Why no cue may be raised now (``''`` when cues are allowed)."""
        m = tick.metrics
        a = self.campaign.alerts
        if self._hold_explicit:
            return "hold"
        if m.get("far_kind") in FAR_HOLD_KINDS or m.get("far_signal") == "none":
            return "hold"
        if self._far_silent_s >= a.hold_silence_s or self._far_tone_s >= FAR_TONE_HOLD_S:
            return "hold"
        if tick.near_flat_s >= a.mute_after_s or m.get("near_signal") == "none":
            return "muted"
        if not m.get("in_call", self._in_call) or self._ended:
            return "idle"
        if a.budget_per_hour == 0:
            return "budget"
        return ""

    def _learn(self, tick: Tick) -> None:
        """Grow the baseline from the first speech, and the call's rate and pitch statistics."""
        short, long = tick.short, tick.long
        b = self.baseline
        need = self.campaign.alerts.baseline_speech_s
        # the baseline and the call's statistics read only windows that lie inside the call and
        # inside the stretch since the last hold or mute: the first seconds of a call would read
        # the call before, those after a hold the voice the agent had on hold
        long_in_call = slow_in_call = fast_live = False
        if long is not None and self._in_call:
            since_s = max(self._call_start_s, self._live_since_s) - 0.01  # a hop of slack
            t0_s, end_s = tick.voice_t0_s, long.end_s
            long_in_call = t0_s + long.start_s >= since_s
            slow_in_call = t0_s + max(0.0, end_s - self.campaign.too_slow.window_s) >= since_s
            fast_live = t0_s + max(0.0, end_s - self.campaign.too_fast.window_s) >= since_s
        slow = _rated(tick.slow)
        if slow is not None and slow.articulation_rate_syl_s and slow_in_call:
            self._rates.append(slow.articulation_rate_syl_s)  # the call's rate statistics
        fast = _rated(short)
        if fast is not None and fast.pace_syl_s and fast_live and not b.ready(need):
            b.pace_syl_s.append(fast.pace_syl_s)
            if fast.spectral_speed_db:
                b.spectral_speed_db.append(fast.spectral_speed_db)
        if long is not None and long.voiced_ratio >= VOICED_MIN and long_in_call:
            if long.f0_median_hz:
                self._f0.append(long.f0_median_hz)
            if long.pitch_range_st is not None:
                self._ranges.append(long.pitch_range_st)
            if long.level_dbfs is not None:
                self._levels.append(long.level_dbfs)
            if not b.ready(need):
                if long.pitch_range_st is not None:
                    b.pitch_range_st.append(long.pitch_range_st)
                if long.level_dbfs is not None:
                    b.level_dbfs.append(long.level_dbfs)
        if not b.ready(need):
            b.speech_s += float(tick.metrics.get("near_speech_ratio", 0.0)) * float(
                tick.metrics.get("window_s", 1.0))

    def _conditions(self, tick: Tick, now: float
                    ) -> dict[str, tuple[float, float, bool, bool, float, float, str]]:
        """Per cue: (evidence, threshold, start condition, end condition, min on, min off, severity)."""
        c = self.campaign
        m = tick.metrics
        dt = float(m.get("window_s", 1.0))
        out: dict[str, tuple[float, float, bool, bool, float, float, str]] = {}
        ready = self.baseline.ready(c.alerts.baseline_speech_s)
        short, long = tick.short, tick.long
        # too fast over the short window, too slow over the slow one: the pace (pauses and the
        # prospect's turns left out) relative to the agent's own baseline pace, or past the
        # campaign's absolute band; too fast reads the tempo, the pace and the spectral speed
        fast_win, slow_win = _rated(short), _rated(tick.slow)
        for cue, cfg, sign, win in (("too_fast", c.too_fast, 1.0, fast_win),
                                    ("too_slow", c.too_slow, -1.0, slow_win)):
            if not cfg.enabled:
                continue
            rate = win.pace_syl_s if win is not None else None
            if rate is None:  # no speech: the release clock runs
                out[cue] = (0.0, cfg.ratio_on, False, True, cfg.min_on_s, cfg.min_off_s, "medium")
            elif ready:
                base = self.baseline.value("pace_syl_s")
                ratio = rate / base
                if sign > 0 and win is not None and win.spectral_speed_db:
                    ratio = tempo_ratio(ratio, win.spectral_speed_db
                                                 / self.baseline.value("spectral_speed_db"))
                band = sign * rate >= sign * cfg.band_syl_s
                on = sign * ratio >= sign * cfg.ratio_on or band
                off = sign * ratio <= sign * cfg.ratio_off and not band
                far = abs(ratio - 1.0) >= 1.5 * abs(cfg.ratio_on - 1.0)
                # the threshold in effect: the campaign's band, as a ratio, when it is the nearer;
                # past half as far again, the "high" one
                threshold = 1.0 + 1.5 * (cfg.ratio_on - 1.0) if far else \
                    sign * min(sign * cfg.ratio_on, sign * cfg.band_syl_s / base)
                out[cue] = (ratio, threshold, on, off, cfg.min_on_s, cfg.min_off_s,
                            "high" if far else "medium")
        # monologue: the conversation stage's current agent turn
        mono = float(m.get("monologue_s_current", 0.0))
        if c.monologue.enabled:
            high = mono >= c.monologue.high_s
            out["monologue"] = (mono, c.monologue.high_s if high else c.monologue.on_s,
                                mono >= c.monologue.on_s, mono < c.monologue.on_s, 0.0, 0.0,
                                "high" if high else "medium")
        # no pause or breath: consecutive seconds of speech whose short window holds no pause
        if c.no_pause.enabled:
            speech = float(m.get("near_speech_ratio", 0.0))
            if short is not None and short.pauses == 0 and short.pauses_audible and speech >= 0.5:
                self._run_s += dt
                self._run_speech_s += speech * dt
            else:
                self._run_s = self._run_speech_s = 0.0
            cfg_np = c.no_pause
            on = self._run_s >= cfg_np.on_s and self._run_speech_s >= cfg_np.speech_ratio * self._run_s
            out["no_pause"] = (self._run_s, cfg_np.on_s, on, self._run_s == 0.0, 0.0, 0.0, "medium")
        # monotone and low energy, relative to the agent's own baseline
        if ready and long is not None and long.voiced_ratio >= VOICED_MIN:
            if c.monotone.enabled and long.pitch_range_st is not None:
                r = long.pitch_range_st / max(self.baseline.value("pitch_range_st"), 1e-6)
                out["monotone"] = (r, c.monotone.ratio_on, r <= c.monotone.ratio_on,
                                   r >= c.monotone.ratio_off, c.monotone.min_on_s,
                                   c.monotone.min_off_s, "low")
            if c.low_energy.enabled and long.level_dbfs is not None:
                drop = self.baseline.value("level_dbfs") - long.level_dbfs
                out["low_energy"] = (drop, c.low_energy.drop_db_on, drop >= c.low_energy.drop_db_on,
                                     drop <= c.low_energy.drop_db_off, c.low_energy.min_on_s,
                                     c.low_energy.min_off_s, "low")
        # talking over: an agent-started overlap lasting min_overlap_s (or an agent interruption)
        to = c.talking_over
        if to.enabled:
            if self._open_overlap_s is not None and self._speaking["near"] and self._speaking["far"] \
                    and now - self._open_overlap_s >= to.min_overlap_s:
                self._talking_over(now - self._open_overlap_s)
            if self._talk_over_until == math.inf:
                if "talking_over" in self.active or self._cooldown_ok("talking_over", now):
                    self._talk_over_until = now + to.show_s
                else:
                    self._talk_over_until = -math.inf
            raise_it = self._talk_over_until > now
            out["talking_over"] = (round(self._talk_over_value, 2), self._talk_over_threshold,
                                   raise_it, not raise_it, 0.0, 0.0, "medium")
            if not raise_it:
                self._talk_over_value = 0.0
        # slow to respond: the prospect spoke last and nobody has spoken since
        sr = c.slow_response
        if sr.enabled:
            gap = self._response_gap(now)
            on = sr.on_s <= gap < sr.max_s and not self._far_tone_s  # a tone: nobody waiting
            out["slow_response"] = (round(gap, 2), sr.on_s, on, not on, 0.0, 0.0, "medium")
        # the prospect hesitating: answers after a long silence, or holding a filled pause
        ph = c.prospect_hesitating
        if ph.enabled:
            if ph.filled_pauses and tick.far_filled_pauses_s:
                # an answer lasts until the agent speaks again or the next answer begins; every
                # answer is checked (two may come in one window, a filler is confirmed late)
                answers = list(self._answers)
                for i, x in enumerate(answers):
                    nxt = answers[i + 1].start_s if i + 1 < len(answers) else math.inf
                    until = min([s for s in self._near_starts if s > x.start_s] + [nxt])
                    x.filled_pause |= any(x.start_s - 0.1 <= tick.voice_t0_s + a < until
                                          for a, _ in tick.far_filled_pauses_s)
            # the evidence: how many of the recent answers were hesitant
            n = sum(1 for x in self._answers if x.latency_s >= ph.latency_on_s or x.filled_pause)
            on = n >= ph.count
            out["prospect_hesitating"] = (n, ph.count, on, not on, 0.0, 0.0, "low")
        # the prospect tense (affect model, far channel only)
        pt = c.prospect_tense
        tension = m.get("prospect_tension")
        if tension is not None:
            self._tension = (float(tension), now)
        elif self._tension is not None and now - self._tension[1] <= TENSION_HOLD_S:
            tension = self._tension[0]  # windows shorter than the model's hop hold its last value
        if pt.enabled and tension is not None:
            out["prospect_tense"] = (float(tension), pt.tension_on, tension >= pt.tension_on,
                                     tension <= pt.tension_off, pt.min_on_s, pt.min_off_s, "medium")
        return out

    def _response_gap(self, now: float) -> float:
        """Seconds since the prospect stopped, if the prospect spoke last and nobody speaks (else 0);
        a prospect who stopped before a hold or mute is not waiting (the gap was the hold's)."""
        far_end, near_end = self._last_end["far"], self._last_end["near"]
        if self._speaking["near"] or self._speaking["far"] or far_end is None \
                or far_end < self._live_since_s:
            return 0.0
        return now - far_end if near_end is None or near_end < far_end else 0.0

    def poll(self, now_s: float, near_flat_s: float = 0.0, far_kind: str = "") -> list[dict[str, Any]]:
        """Between metrics windows: raise ``slow_response`` as soon as its gap is reached.

        It needs only the speech events, so it need not wait up to a second for the next window.
        The window that follows keeps or ends it as usual.

        Args:
            now_s: audio time the pipeline has reached, seconds.
            near_flat_s: how long the agent's channel has been digitally flat now (a mute since
                the last window holds the cue back as the window's would), seconds.
            far_kind: the far end's label now (hold music or a tone since the last window too).

        Returns:
            A ``cue_on`` body, or nothing.
        """
        sr = self.campaign.slow_response
        if (not sr.enabled or self._why or self._ended
                or self._hold_explicit or self._far_tone_s
                or "slow_response" in self.active or near_flat_s >= self.campaign.alerts.mute_after_s
                or far_kind in FAR_HOLD_KINDS or far_kind in FAR_TONE_KINDS):
            return []
        gap = self._response_gap(now_s)
        if not sr.on_s <= gap < sr.max_s:
            return []
        ev = self._on("slow_response", now_s, "medium", round(gap, 2), sr.on_s)
        return [ev] if ev is not None else []

    # ------------------------------------------------------------------------------ raising
    def _cooldown_ok(self, cue: str, now: float) -> bool:
        last = self._last_off.get(cue)
        return last is None or now - last >= getattr(self.campaign, cue).cooldown_s

    def _on(self, cue: str, now: float, severity: str, value: float, threshold: float
            ) -> dict[str, Any] | None:
        """Raise a cue if its cooldown and the hourly budget allow it."""
        if not self._cooldown_ok(cue, now):
            return None
        while self._raised and now - self._raised[0] >= 3600.0:
            self._raised.popleft()
        if len(self._raised) >= self.campaign.alerts.budget_per_hour:
            if cue not in self._refused:
                self._refused.add(cue)
                self.suppressed_by_budget += 1
            return None
        self._raised.append(now)
        self.active[cue] = _Active(cue, now, severity, value, threshold)
        self._episodes.append([cue, now, None, self._last_off.get(cue)])
        return cue_event("cue_on", cue, now, severity, value, threshold)

    def _off(self, cue: str, now: float) -> dict[str, Any]:
        act = self.active.pop(cue)
        for episode in reversed(self._episodes):
            if episode[0] == cue and episode[2] is None:
                episode[2] = now
                break
        self._last_off[cue] = now
        self._timers[cue] = _Timer()
        return cue_event("cue_off", cue, now, act.severity, act.value, act.threshold,
                         duration_s=round(now - act.start_s, 3))


def cue_event(name: str, cue: str, t_s: float, severity: str, value: float, threshold: float,
              **extra: Any) -> dict[str, Any]:
    """A ``cue_on`` / ``cue_off`` event body (flat scalars only)."""
    info = CUES[cue]
    return {"name": name, "channel": info.channel, "t_audio_s": round(t_s, 3), "cue": cue,
            "severity": severity, "evidence_value": round(float(value), 3),
            "evidence_threshold": round(float(threshold), 3), "evidence_unit": info.unit, **extra}

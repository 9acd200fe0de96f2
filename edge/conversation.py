"""Conversation state from the two channels' speech states.

:func:`talk_state` and :class:`MetricsWindow` give the talk state and the speech shares of each
metrics window; :class:`Conversation` derives segments, turns, overlaps, interruptions, response
latency, calls and rolling-window figures from the speech gates' transitions.
"""

from __future__ import annotations

import heapq
import logging
import math
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

log = logging.getLogger(__name__)


def talk_state(near_speaking: bool, far_speaking: bool) -> str:
    """Who is talking: ``agent``, ``prospect``, ``overlap`` or ``silence``."""
    if near_speaking and far_speaking:
        return "overlap"
    if near_speaking:
        return "agent"
    if far_speaking:
        return "prospect"
    return "silence"


@dataclass(frozen=True)
class WindowMetrics:
    """Speech shares of one metrics window."""

    t_start: float
    """Audio time of the window's first frame, in seconds."""
    window_s: float
    """Audio covered by the window, in seconds."""
    near_speech_ratio: float
    """Share of the window in which the agent spoke, 0..1."""
    far_speech_ratio: float
    """Share of the window in which the far end spoke, 0..1."""
    near_talking: bool
    """Whether the agent was speaking at the window's end."""
    far_talking: bool
    """Whether the far end was speaking at the window's end."""
    talk_state: str
    """Talk state at the window's end."""


class MetricsWindow:
    """Accumulates per-frame speech states into windows aligned on multiples of ``window_s``.

    A frame that straddles a window boundary is split between the two windows, so every window
    covers exactly ``window_s`` of audio, except the first after :meth:`reset` when the audio
    resumes inside a window (after private mode, say): that one starts at its first frame and is
    shorter, so that its shares are of the audio it heard.
    """

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self.reset()

    def reset(self) -> None:
        """Drop the window being accumulated."""
        self._t_start: float | None = None
        self._fed_from_s = 0.0
        self._near_s = 0.0
        self._far_s = 0.0

    def __call__(self, start_s: float, duration_s: float, near: bool, far: bool
                 ) -> WindowMetrics | None:
        """Add one frame's states; return the window's metrics when the frame completes it.

        Args:
            start_s: the frame's start time, seconds.
            duration_s: the frame's length, seconds (shorter than ``window_s``).
            near: the agent's speech state during the frame.
            far: the far end's speech state during the frame.

        Returns:
            The completed window, or ``None``.
        """
        if self._t_start is None:
            self._t_start = start_s // self.window_s * self.window_s
            self._fed_from_s = start_s
        end_s = self._t_start + self.window_s
        inside_s = min(start_s + duration_s, end_s) - start_s
        self._near_s += inside_s * near
        self._far_s += inside_s * far
        if start_s + duration_s < end_s - 1e-9:
            return None
        first_s, span_s = self._t_start, self.window_s
        if self._fed_from_s > self._t_start:  # the first window after a resume inside it
            first_s, span_s = self._fed_from_s, round(end_s - self._fed_from_s, 3)
        done = WindowMetrics(
            t_start=round(first_s, 3),
            window_s=span_s,
            near_speech_ratio=round(min(1.0, max(0.0, self._near_s / span_s)), 3),
            far_speech_ratio=round(min(1.0, max(0.0, self._far_s / span_s)), 3),
            near_talking=near,
            far_talking=far,
            talk_state=talk_state(near, far),
        )
        rest_s = duration_s - inside_s
        self._t_start = end_s
        self._near_s = rest_s * near
        self._far_s = rest_s * far
        return done


# ---------------------------------------------------------------------------------------------
# Conversation dynamics: segments, turns, overlaps, interruptions, response latency, calls.
# ---------------------------------------------------------------------------------------------

AGENT = "near"
"""The agent's channel (headset microphone)."""
PROSPECT = "far"
"""The prospect's channel (the line)."""
ROLE = {AGENT: "agent", PROSPECT: "prospect"}
BOTH = "both"
"""Starter of an overlap in which both sides started speaking together."""
MAX_HOLDS = 64
"""Most holds a call keeps one by one (:meth:`Conversation._trim_holds`): a call-state input that
flips hold and active without ending the call (a softphone's every media event) added one per
flip, for ever (7 h at one a 64 ms block: 200,000, 25.6 MB, and 38.5 ms a second of metrics)."""

# Kinds of pending input, in the order simultaneous ones are processed: a speech end before a call
# signal before a speech start, so that one side stopping exactly when the other starts is a
# hand-over, not an overlap.
_END, _CALL_END, _CALL_START, _CALL_HOLD, _LINE_HOLD, _START = 0, 1, 2, 3, 4, 5
_SIGNAL = "signal"
"""Subject of a call signal (:meth:`Conversation.call_state`): a ``_CALL_END`` of it ends the call
with the reason ``signal``."""
_HANGUP = "hangup"
"""Subject of a ``_CALL_END`` that a busy tone caused (its end reason)."""
_VOICEMAIL = "voicemail"
"""Subject of a ``_CALL_END`` that a beep caused (see :meth:`Conversation.voicemail`)."""


class _Pending(NamedTuple):
    """One input the conversation stage has been told of and not yet processed (it waits up to
    ``reorder_s`` for late gate transitions). The heap orders them as tuples: by time, then by
    kind (the order above), then in the order they were told."""

    t_s: float
    """When it happens, audio seconds."""
    kind: int
    """``_END``, ``_CALL_END``, ``_CALL_START``, ``_CALL_HOLD``, ``_LINE_HOLD`` or ``_START``."""
    seq: int
    """How many inputs were told before it, plus one (unique: the subject is never compared)."""
    subject: str
    """What it is about: the channel of a speech ``_START`` or ``_END``; ``on`` or ``off`` for a
    ``_LINE_HOLD``; :data:`_SIGNAL`, :data:`_HANGUP` or :data:`_VOICEMAIL` for a call input."""


def _other(ch: str) -> str:
    return PROSPECT if ch == AGENT else AGENT


@dataclass(frozen=True)
class ConversationConfig:
    """Tunable definitions of the conversation metrics (times in seconds)."""

    turn_gap_s: float = 0.7
    """A channel's speech segments separated by pauses shorter than this form one turn."""
    reorder_s: float = 0.25
    """How late a gate transition may be reported (the gate back-dates its times by up to its
    confirmation delay: ``max(min_speech_ms, min_silence_ms)`` plus a frame or two). Transitions are
    processed in time order this long after the audio, so a late-confirmed end never looks like an
    overlap with a start confirmed earlier."""
    windows_s: tuple[float, ...] = (30.0, 60.0)
    """Rolling windows of the per-second metrics (the wire allow-list names 30 s and 60 s)."""
    simultaneous_s: float = 0.1
    """Two starts this close together are a simultaneous start: the overlap's starter is ``both``."""
    interrupt_hold_s: float = 0.5
    """The overlapped side holds the turn if its current turn began at least this long before."""
    interrupt_yield_s: float = 2.0
    """An overlap is an interruption if the overlapped side then stops within this long of the
    overlap's start while the starter is still speaking."""
    max_latency_s: float = 10.0
    """Longer silences before a turn are dead air, not a response: no latency is counted."""
    call_start_on_speech: bool = True
    """Far-end speech starts a call (else only :meth:`Conversation.call_state` does)."""
    call_end_silence_s: float | None = 20.0
    """A call ends after this long with no speech on either channel (None: only on the signal).
    Only where speech starts calls: where the call signal alone does, nothing would start the
    rest of a call ended on a long silence, so the signal alone ends it."""
    voicemail_within_s: float = 60.0
    """A beep on the line this soon after the call began ends it as a voicemail (or a recorded
    announcement): the far speech before it was a greeting, not a prospect. Only where speech
    starts calls: where the call signal alone does, it alone ends them."""
    voicemail_agent_max_s: float = 3.0
    """...provided the agent has spoken at most this long in the call (a "hello?"): a beep in a
    conversation the agent took part in is not a voicemail's."""
    keep_history: bool = False
    """Keep every segment, turn, overlap, response and call summary (offline analysis and tests)."""


@dataclass(frozen=True)
class Segment:
    """One channel's speech segment."""

    channel: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Turn:
    """One channel's turn: its speech segments with pauses shorter than the turn gap merged."""

    channel: str
    start_s: float
    end_s: float


@dataclass
class Overlap:
    """Both channels speaking at once; ``starter`` is the channel that started second (or ``both``)."""

    start_s: float
    starter: str
    end_s: float | None = None
    interruption: bool = False
    """The overlapped side held the turn and stopped within ``interrupt_yield_s``, the starter
    still speaking: the starter took the floor."""
    candidate: bool = False
    on_hold: bool = False
    """Begun while the call was on hold: nobody talks over the prospect on hold, so neither the
    call's counts nor the rolling windows count it (nor its interruption)."""

    @property
    def duration_s(self) -> float:
        """Length of the overlap (0 while it is still open)."""
        return 0.0 if self.end_s is None else self.end_s - self.start_s


@dataclass(frozen=True)
class Response:
    """A turn that started after the other side had stopped: the response latency."""

    channel: str
    """Who responded."""
    t_s: float
    """Start of the responding turn."""
    latency_s: float
    """From the other side's last speech end to this turn's start (always > 0)."""


@dataclass(frozen=True)
class CallSummary:
    """Per-call figures, published flat on the ``call_end`` event with a ``call_`` prefix."""

    start_s: float
    end_s: float
    end_reason: str
    """``silence``, ``signal``, ``hangup``, ``voicemail`` or ``end_of_stream`` (the wire's
    ``call_end_reason``): the line fell silent, a call-state signal, the prospect hung up (a busy
    tone), a voicemail's beep (its far speech was a greeting), or the recording ended."""
    duration_s: float
    hold_s: float
    """Time on hold (the call-state input's ``hold``, or hold music on the line), seconds. Speech on
    hold (the agent asking a colleague) is nobody's in this call: the ratios, turns and monologue
    read the call's time off hold."""
    agent_speech_ratio: float | None
    """Share of the call off hold in which the agent spoke, 0..1 (this and the next three: None for
    a call of no length, a call signal with nobody speaking)."""
    prospect_speech_ratio: float | None
    """Share of the call off hold in which the prospect spoke, 0..1."""
    silence_ratio: float | None
    """Share of the call off hold in which nobody spoke, 0..1."""
    overlap_ratio: float | None
    """Share of the call off hold in which both spoke, 0..1."""
    agent_share: float | None
    """Agent speech / (agent + prospect speech), 0..1; None without speech."""
    talk_ratio: float | None
    """Agent speech / prospect speech (talk-to-listen); None without prospect speech."""
    overlaps: int
    """Overlaps begun off hold (this and the next five: talk on hold is over nobody)."""
    overlaps_agent: int
    """Overlaps the agent started (the prospect was already speaking)."""
    overlaps_prospect: int
    overlaps_both: int
    interruptions_agent: int
    interruptions_prospect: int
    responses_agent: int
    responses_prospect: int
    latency_agent_ms_median: float | None
    """Median agent response latency, ms; None without responses."""
    latency_agent_ms_mean: float | None
    latency_prospect_ms_median: float | None
    latency_prospect_ms_mean: float | None
    monologue_s_longest: float
    """Longest agent turn in the call (its part off hold), seconds."""
    turns_agent: int
    turns_prospect: int

    def fields(self, prefix: str = "call_") -> dict[str, float | int | str]:
        """Flat scalar fields, None values left out (the wire takes no nulls)."""
        return {f"{prefix}{k}": v for k, v in asdict(self).items()
                if v is not None and k not in ("start_s", "end_s")}


@dataclass
class _Call:
    start_s: float
    agent_s: float = 0.0
    prospect_s: float = 0.0
    overlap_s: float = 0.0
    speech_s: float = 0.0
    overlaps: dict[str, int] = field(default_factory=lambda: {AGENT: 0, PROSPECT: 0, BOTH: 0})
    interruptions: dict[str, int] = field(default_factory=lambda: {AGENT: 0, PROSPECT: 0})
    latencies_s: dict[str, list[float]] = field(default_factory=lambda: {AGENT: [], PROSPECT: []})
    turns: dict[str, int] = field(default_factory=lambda: {AGENT: 0, PROSPECT: 0})
    monologue_s: float = 0.0
    hold: bool = False
    resumed_s: float = -math.inf
    hold_s: float = 0.0
    holds: list[list[float]] = field(default_factory=list)
    """[start_s, end_s] of each hold, in order; the last one's end is infinite while it lasts.
    At most :data:`MAX_HOLDS` (:meth:`Conversation._trim_holds`)."""

    @property
    def on_hold(self) -> bool:
        return bool(self.holds) and self.holds[-1][1] == math.inf

    def off_hold_s(self, start_s: float, end_s: float) -> float:
        """The longest part of ``start_s``..``end_s`` (seconds) inside the call and off hold."""
        best, t = 0.0, max(start_s, self.start_s)
        for h0, h1 in self.holds:
            if h0 >= end_s:
                break
            if h1 > t:
                best, t = max(best, h0 - t), h1
        return max(best, end_s - t)


@dataclass
class History:
    """Everything the stage saw since :meth:`Conversation.reset` (``keep_history`` only)."""

    segments: list[Segment] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    overlaps: list[Overlap] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    calls: list[CallSummary] = field(default_factory=list)


def _ms(values_s: list[float], how: str) -> float | None:
    if not values_s:
        return None
    v = statistics.median(values_s) if how == "median" else statistics.fmean(values_s)
    return round(v * 1000.0, 1)


def _clip(start_s: float, end_s: float, a_s: float, b_s: float) -> float:
    return max(0.0, min(end_s, b_s) - max(start_s, a_s))


def _off_hold(holds: list[list[float]], a_s: float, b_s: float) -> list[tuple[float, float]]:
    """The stretches of ``a_s``..``b_s`` (seconds) outside ``holds`` (in order, [start_s, end_s])."""
    out, t = [], a_s
    for h0, h1 in holds:
        if h0 >= b_s:
            break
        if h1 <= t:
            continue
        if h0 > t:
            out.append((t, h0))
        t = h1
    if t < b_s:
        out.append((t, b_s))
    return out


def _clip_all(start_s: float, end_s: float, spans: list[tuple[float, float]]) -> float:
    """How much of ``start_s``..``end_s`` lies in ``spans``, seconds."""
    return sum(_clip(start_s, end_s, a, b) for a, b in spans)


Event = dict[str, Any]
"""An ``event`` message body (wire fields without header)."""
Transition = tuple[str, str, float]
"""A speech gate transition: (channel, ``"start"`` or ``"end"``, time in seconds)."""


class Conversation:
    """Conversation dynamics from the two channels' speech-gate states; no I/O.

    Fed once per frame with the gates' states and the transitions they reported in that frame
    (times back-dated by the gate). Items are processed in time order ``reorder_s`` behind the audio.
    Returns publish-ready ``event`` bodies; :meth:`metrics` gives the per-second scalar fields.

    Definitions (see :class:`ConversationConfig` for the parameters):

    * segment: one gate speech run of a channel; turn: a channel's segments with pauses
      < ``turn_gap_s`` merged (per channel: the other side's speech does not split a turn).
    * overlap: both channels speaking; its starter is the channel whose segment started while the
      other was already speaking (``both`` if the two starts are within ``simultaneous_s``).
    * interruption: an overlap started by X while Y holds the turn (Y's turn began at least
      ``interrupt_hold_s`` earlier), after which Y stops within ``interrupt_yield_s`` of the
      overlap's start while X is still speaking. The call's counts and the rolling windows leave
      out the overlaps (and their interruptions) begun while the call was on hold.
    * response latency: when X starts a new turn while Y is silent and Y spoke more recently than X
      (within the call, at most ``max_latency_s`` before): start minus Y's last speech end. A turn
      started while the other speaks is an overlap, never a negative latency.
    * call: starts at far-end speech (or :meth:`call_state`), ends ``call_end_silence_s`` after the
      last speech on either channel where speech starts calls (the call's end is that last speech
      end), on the signal, or
      where a busy tone (:meth:`hang_up`) or a voicemail's beep (:meth:`voicemail`) began; a turn
      under way when the call ends is one of its turns.
    """

    def __init__(self, config: ConversationConfig = ConversationConfig()) -> None:
        self.config = config
        self.calls_begun = 0
        """Calls begun since the stage was made (a :meth:`reset` does not set it back)."""
        self.reset()

    def reset(self) -> None:
        """Forget everything: a new stream."""
        self._clock_s: float | None = None
        self._t_s: float | None = None
        self._t0_s = 0.0
        self._pending: list[_Pending] = []
        self._defer_s: float | None = None
        self._line_hold = False  # hold music on the line (see line_hold)
        self._last_call_end_s = -math.inf  # where the last call ended: windows between calls start there
        self._keep_s = max(self.config.windows_s, default=0.0)
        self._seq = 0
        self._reported = {AGENT: False, PROSPECT: False}
        self._speaking = {AGENT: False, PROSPECT: False}
        self._seg_start: dict[str, float | None] = {AGENT: None, PROSPECT: None}
        self._last_end: dict[str, float | None] = {AGENT: None, PROSPECT: None}
        self._turn_start: dict[str, float | None] = {AGENT: None, PROSPECT: None}
        self._turn_counted = {AGENT: False, PROSPECT: False}  # by a call that ended during it
        self._segments: deque[Segment] = deque()
        self._turns: deque[Turn] = deque()
        self._overlaps: deque[Overlap] = deque()
        self._open_overlap: Overlap | None = None
        self._responses: deque[Response] = deque()
        self._untaken: list[Response] = []
        self._call: _Call | None = None
        self._out: list[Event] = []
        self.last_call: CallSummary | None = None
        """Summary of the last call that ended."""
        self.history: History | None = History() if self.config.keep_history else None

    def take_responses(self) -> list[Response]:
        """The answers of either side recorded since the last take, in order (the fatigue and cue
        stages read each once, however many fall in one metrics window)."""
        out, self._untaken = self._untaken, []
        return out

    # ------------------------------------------------------------------------------ inputs
    def __call__(self, start_s: float, duration_s: float, near_speaking: bool, far_speaking: bool,
                 transitions: Iterable[Transition] = ()) -> list[Event]:
        """Add one frame; return the events that became final.

        Args:
            start_s: the frame's start, seconds of audio.
            duration_s: the frame's length, seconds.
            near_speaking: the agent's gate state after the frame.
            far_speaking: the far end's gate state after the frame.
            transitions: the gates' transitions reported in this frame, (channel, "start"/"end",
                back-dated time in seconds). A state change without a transition is taken to
                happen at ``start_s``.

        Returns:
            ``event`` bodies (name, channel, t_audio_s and extra fields), in time order.
        """
        if self._clock_s is None:
            self._t0_s = self._t_s = start_s
        for ch, change, t_s in transitions:
            self._push(t_s, _START if change == "start" else _END, ch)
            self._reported[ch] = change == "start"
        for ch, now in ((AGENT, near_speaking), (PROSPECT, far_speaking)):
            if now != self._reported[ch]:
                self._push(start_s, _START if now else _END, ch)
                self._reported[ch] = now
        self._clock_s = start_s + duration_s
        horizon_s = self._clock_s - self.config.reorder_s
        if self._defer_s is not None:
            horizon_s = min(horizon_s, self._defer_s)
        self._process(horizon_s)
        return self._flush()

    def defer(self, t_s: float | None) -> None:
        """Process nothing later than ``t_s`` (seconds) until called with None.

        A hang-up is known seconds after the busy tone began (:data:`edge.pipeline.HANGUP_BUSY_S`):
        while it is being confirmed, what follows the tone's start waits, so that the call can end
        where the tone began and the agent's "hello?" over the tone is not part of it.
        """
        self._defer_s = t_s

    def call_state(self, state: str, t_s: float | None = None) -> None:
        """Explicit call signal (the wire's ``call_state`` command, or start/end).

        ``active`` (or ``start``) starts a call if none is in progress and ends a hold; ``idle``
        (or ``end``) ends the call; ``hold`` keeps the call open (starting one if needed) and
        suspends the silence timeout until ``active``. Repeating a state changes nothing.

        Args:
            state: ``active``, ``idle``, ``hold``, ``start`` or ``end``.
            t_s: audio time of the signal, seconds (default: the end of the last frame fed).
        """
        kinds = {"active": _CALL_START, "start": _CALL_START, "idle": _CALL_END, "end": _CALL_END,
                 "hold": _CALL_HOLD}
        if state not in kinds:
            raise ValueError(f"call state must be one of {', '.join(kinds)}, not {state!r}")
        t = t_s if t_s is not None else (self._clock_s or 0.0)
        self._push(t, kinds[state], _SIGNAL)

    def line_hold(self, on: bool, t_s: float) -> None:
        """Hold music on the line from ``t_s`` (seconds) if ``on``, none from then if not.

        Like the ``hold`` signal, it keeps a call open (no silence end while it plays) and no answer
        is timed across it; the silence clock restarts where it stops.
        """
        self._push(t_s, _LINE_HOLD, "on" if on else "off")

    def hang_up(self, t_s: float) -> None:
        """The far end hung up (a busy tone on the line at ``t_s``, seconds): end the call there,
        back-dated if the stage has processed past it (see :meth:`defer`)."""
        self._push(t_s, _CALL_END, _HANGUP)

    def voicemail(self, t_s: float) -> None:
        """A beep on the line at ``t_s``, seconds: end the call there as a voicemail if it is one
        (see ``voicemail_within_s`` and ``voicemail_agent_max_s``), else nothing."""
        self._push(t_s, _CALL_END, _VOICEMAIL)

    def finish(self) -> list[Event]:
        """End of stream: process everything, close open speech and the call; return events."""
        if self._clock_s is None:
            return []
        end = self._clock_s
        for ch in (AGENT, PROSPECT):
            if self._reported[ch]:
                self._push(end, _END, ch)
                self._reported[ch] = False
        self._process(end)
        for ch in (AGENT, PROSPECT):
            if self._turn_start[ch] is not None:
                self._finish_turn(ch)
        if self._call is not None:
            self._end_call(self._t_s or end, "end_of_stream")
        return self._flush()

    # ------------------------------------------------------------------------------ engine
    def _push(self, t_s: float, kind: int, subject: str) -> None:
        """Add an input to the pending heap (see :class:`_Pending`)."""
        self._seq += 1
        heapq.heappush(self._pending, _Pending(t_s, kind, self._seq, subject))

    def _flush(self) -> list[Event]:
        out, self._out = self._out, []
        return out

    def _emit(self, name: str, channel: str, t_s: float, **extra: Any) -> None:
        self._out.append({"name": name, "channel": channel, "t_audio_s": round(t_s, 3), **extra})

    def _process(self, horizon_s: float) -> None:
        """Process the pending inputs up to ``horizon_s`` in order (one older than the time already
        processed, at that time), then move processed time to ``horizon_s``."""
        assert self._t_s is not None
        while self._pending and self._pending[0].t_s <= horizon_s:
            t, kind, _, subject = heapq.heappop(self._pending)
            # a tone's call end keeps its time (the tone is named after it began); the call's
            # accumulated speech then runs at most to where processing stood (see defer())
            tone_s = t
            if t < self._t_s:
                if subject not in (_HANGUP, _VOICEMAIL):
                    log.debug("transition at %.3f s reported after %.3f s: reorder_s too short",
                              t, self._t_s)
                t = self._t_s
            self._advance(t)
            if kind == _START:
                self._on_start(subject, t)
            elif kind == _END:
                self._on_end(subject, t)
            elif kind in (_CALL_START, _CALL_HOLD):
                if self._call is None:
                    self._begin_call(t)
                assert self._call is not None
                if self._call.hold and kind == _CALL_START:
                    self._call.resumed_s = t
                self._call.hold = kind == _CALL_HOLD
                self._hold_changed(t)
            elif kind == _LINE_HOLD:
                self._line_hold = subject == "on"
                if self._call is not None and not self._line_hold:
                    self._call.resumed_s = max(self._call.resumed_s, t)
                self._hold_changed(t)
            # the rest are call ends (_CALL_END), of a call in progress or of none
            elif self._call is not None and subject == _VOICEMAIL:
                cfg, call = self.config, self._call
                t_end = max(tone_s, call.start_s)
                # where only the softphone starts calls, nothing would restart a call ended wrongly
                if cfg.call_start_on_speech and t_end - call.start_s <= cfg.voicemail_within_s \
                        and call.agent_s <= cfg.voicemail_agent_max_s:
                    self._end_call(t_end, "voicemail")
            elif self._call is not None and subject == _HANGUP:
                self._end_call(max(tone_s, self._call.start_s), "hangup")
            elif self._call is not None:
                self._end_call(t, "signal")
        if horizon_s > self._t_s:
            self._advance(horizon_s)
        self._prune()

    def _advance(self, to_s: float) -> None:
        """Move processed time to ``to_s``, firing turn and call timeouts on the way."""
        assert self._t_s is not None
        while True:
            deadline, what = self._next_deadline()
            if deadline is None or deadline > to_s:
                break
            self._accumulate(max(deadline, self._t_s))
            if what == "call":
                self._end_call(self._call_last_speech_s(), "silence")
            else:
                self._finish_turn(what)
        self._accumulate(to_s)

    def _next_deadline(self) -> tuple[float | None, str]:
        # called on every frame: plain comparisons, no intermediate lists
        best: float | None = None
        what = ""
        speaking, last_end, turn_start = self._speaking, self._last_end, self._turn_start
        for ch in (AGENT, PROSPECT):
            end = last_end[ch]
            if turn_start[ch] is not None and not speaking[ch] and end is not None:
                d = end + self.config.turn_gap_s
                if best is None or d < best:
                    best, what = d, ch
        silence = self.config.call_end_silence_s if self.config.call_start_on_speech else None
        call = self._call
        if (call is not None and silence is not None and not call.hold and not self._line_hold
                and not speaking[AGENT] and not speaking[PROSPECT]):
            d = self._call_last_speech_s() + silence
            if best is None or d < best:
                best, what = d, "call"
        return best, what

    def _call_last_speech_s(self) -> float:
        call = self._call
        assert call is not None
        last = max(call.start_s, call.resumed_s)
        for e in self._last_end.values():
            if e is not None and e > last:
                last = e
        return last

    def _accumulate(self, to_s: float) -> None:
        assert self._t_s is not None
        dt = to_s - self._t_s
        if dt <= 0:
            return
        call = self._call
        if call is not None and call.on_hold:
            call.hold_s += dt
        elif call is not None:
            near, far = self._speaking[AGENT], self._speaking[PROSPECT]
            call.agent_s += dt * near
            call.prospect_s += dt * far
            call.overlap_s += dt * (near and far)
            call.speech_s += dt * (near or far)
        self._t_s = to_s

    def _on_start(self, ch: str, t: float) -> None:
        if self._speaking[ch]:
            return
        other = _other(ch)
        self._speaking[ch] = True
        self._seg_start[ch] = t
        if ch == PROSPECT and self._call is None and self.config.call_start_on_speech:
            self._begin_call(t)
        if self._turn_start[ch] is None:
            self._turn_start[ch] = t
            self._turn_counted[ch] = False
            self._maybe_response(ch, t)
        if self._speaking[other]:
            other_start = self._seg_start[other]
            assert other_start is not None
            starter = BOTH if t - other_start <= self.config.simultaneous_s else ch
            turn = self._turn_start[other]
            held = turn is not None and t - turn >= self.config.interrupt_hold_s
            call = self._call
            ov = Overlap(start_s=t, starter=starter, candidate=held and starter != BOTH,
                         on_hold=call is not None and call.on_hold)
            self._open_overlap = ov
            self._overlaps.append(ov)
            if self.history is not None:
                self.history.overlaps.append(ov)
            if call is not None and not ov.on_hold:
                call.overlaps[starter] += 1
            self._emit("overlap_start", starter, t)

    def _maybe_response(self, ch: str, t: float) -> None:
        other = _other(ch)
        other_end, own_end = self._last_end[other], self._last_end[ch]
        call = self._call
        # no answer across a hold: the other side stopped before it, and the wait was the hold's
        if (call is None or call.hold or self._line_hold or self._speaking[other] or other_end is None
                or other_end < max(call.start_s, call.resumed_s)
                or (own_end is not None and own_end >= other_end)
                or t - other_end > self.config.max_latency_s):
            return
        r = Response(ch, t, t - other_end)
        self._responses.append(r)
        call.latencies_s[ch].append(r.latency_s)
        self._untaken.append(r)
        if self.history is not None:
            self.history.responses.append(r)

    def _on_end(self, ch: str, t: float) -> None:
        if not self._speaking[ch]:
            return
        start = self._seg_start[ch]
        assert start is not None
        self._speaking[ch] = False
        self._seg_start[ch] = None
        self._last_end[ch] = t
        seg = Segment(ch, start, t)
        self._segments.append(seg)
        if self.history is not None:
            self.history.segments.append(seg)
        ov = self._open_overlap
        if ov is not None:
            ov.end_s = t
            self._open_overlap = None
            self._emit("overlap_end", ov.starter, t, duration_s=round(ov.duration_s, 3))
            if (ov.candidate and ov.starter == _other(ch)
                    and t - ov.start_s <= self.config.interrupt_yield_s):
                ov.interruption = True
                if self._call is not None and not ov.on_hold:
                    self._call.interruptions[ov.starter] += 1
                self._emit("interruption", ov.starter, ov.start_s, duration_s=round(ov.duration_s, 3))

    def _finish_turn(self, ch: str) -> None:
        start, end = self._turn_start[ch], self._last_end[ch]
        self._turn_start[ch] = None
        if start is None or end is None or end < start:
            return
        turn = Turn(ch, start, end)
        self._turns.append(turn)
        if self.history is not None:
            self.history.turns.append(turn)
        call = self._call
        if call is not None and not self._turn_counted[ch] and call.off_hold_s(start, end) > 0:
            call.turns[ch] += 1
            if ch == AGENT:
                call.monologue_s = max(call.monologue_s, call.off_hold_s(start, end))

    def _current_monologue_s(self, now_s: float) -> float:
        start = self._turn_start[AGENT]
        if start is None:
            return 0.0
        end = min(self._open_turn_end(AGENT, now_s), now_s)
        return self._call.off_hold_s(start, end) if self._call is not None else max(0.0, end - start)

    def _open_turn_end(self, ch: str, now_s: float) -> float:
        """Where ``ch``'s open turn ends so far: now while it speaks, else its last speech end."""
        return now_s if self._speaking[ch] else (self._last_end[ch] or now_s)

    def _hold_changed(self, t: float) -> None:
        """Open or close the call's hold at ``t`` (seconds) after the hold signal or music changed."""
        call = self._call
        if call is None or (call.hold or self._line_hold) == call.on_hold:
            return
        if call.on_hold:
            call.holds[-1][1] = t
        else:
            call.holds.append([t, math.inf])
            if len(call.holds) > MAX_HOLDS:
                self._trim_holds(call, t)

    def _trim_holds(self, call: _Call, t: float) -> None:
        """Bring ``call``'s holds back to :data:`MAX_HOLDS` at ``t`` (seconds): those that ended
        before every open turn began and before the longest rolling window go (no turn or window
        can reach them any more: their time off hold stays exact), then the two holds closest
        together merge, the short time off hold between them counted as hold (a turn's time off
        hold may come out shorter, never longer: no cue on hold). The call's hold time
        (``hold_s``), summed as it passes, is not read from them."""
        keep_from = min((s for s in self._turn_start.values() if s is not None), default=t)
        keep_from = min(keep_from, t - self._keep_s)
        call.holds = [h for h in call.holds if h[1] > keep_from]
        while len(call.holds) > MAX_HOLDS:
            i = min(range(len(call.holds) - 1),
                    key=lambda k: call.holds[k + 1][0] - call.holds[k][1])
            call.holds[i][1] = call.holds.pop(i + 1)[1]

    def _begin_call(self, t: float) -> None:
        self._call = _Call(start_s=t)
        self.calls_begun += 1
        self._hold_changed(t)  # hold music already playing
        # a turn under way (counted by the call before, if it ended in it) is one of this call's
        self._turn_counted = {AGENT: False, PROSPECT: False}
        self._emit("call_start", PROSPECT, t)

    def _end_call(self, t_end: float, reason: str) -> None:
        call = self._call
        assert call is not None
        call.monologue_s = max(call.monologue_s, self._current_monologue_s(t_end))
        for ch in (AGENT, PROSPECT):  # a turn under way when the call ends is one of its turns
            start = self._turn_start[ch]
            if (start is not None and start < t_end and not self._turn_counted[ch]
                    and call.off_hold_s(start, t_end) > 0):
                call.turns[ch] += 1
                self._turn_counted[ch] = True
        duration = max(0.0, t_end - call.start_s)
        live = max(0.0, duration - call.hold_s)  # the ratios' time: the call off hold
        speech = call.agent_s + call.prospect_s

        def ratio(x: float) -> float | None:
            return round(min(1.0, max(0.0, x / live)), 4) if live > 0 else None

        lat = call.latencies_s
        summary = CallSummary(
            start_s=round(call.start_s, 3), end_s=round(t_end, 3), end_reason=reason,
            duration_s=round(duration, 3), hold_s=round(min(call.hold_s, duration), 3),
            agent_speech_ratio=ratio(call.agent_s), prospect_speech_ratio=ratio(call.prospect_s),
            silence_ratio=ratio(live - min(call.speech_s, live)),
            overlap_ratio=ratio(call.overlap_s),
            agent_share=round(call.agent_s / speech, 4) if speech > 0 else None,
            talk_ratio=round(call.agent_s / call.prospect_s, 3) if call.prospect_s > 0 else None,
            overlaps=sum(call.overlaps.values()), overlaps_agent=call.overlaps[AGENT],
            overlaps_prospect=call.overlaps[PROSPECT], overlaps_both=call.overlaps[BOTH],
            interruptions_agent=call.interruptions[AGENT],
            interruptions_prospect=call.interruptions[PROSPECT],
            responses_agent=len(lat[AGENT]), responses_prospect=len(lat[PROSPECT]),
            latency_agent_ms_median=_ms(lat[AGENT], "median"),
            latency_agent_ms_mean=_ms(lat[AGENT], "mean"),
            latency_prospect_ms_median=_ms(lat[PROSPECT], "median"),
            latency_prospect_ms_mean=_ms(lat[PROSPECT], "mean"),
            monologue_s_longest=round(call.monologue_s, 3),
            turns_agent=call.turns[AGENT], turns_prospect=call.turns[PROSPECT],
        )
        self._call = None
        self._last_call_end_s = t_end
        self.last_call = summary
        if self.history is not None:
            self.history.calls.append(summary)
        self._emit("call_end", PROSPECT, t_end, **summary.fields())

    def _prune(self) -> None:
        assert self._t_s is not None
        keep_from = self._t_s - self._keep_s
        while self._segments and self._segments[0].end_s < keep_from:
            self._segments.popleft()
        while self._turns and self._turns[0].end_s < keep_from:
            self._turns.popleft()
        while self._overlaps and self._overlaps[0].end_s is not None \
                and self._overlaps[0].end_s < keep_from:
            self._overlaps.popleft()
        while self._responses and self._responses[0].t_s < keep_from:
            self._responses.popleft()

    # ----------------------------------------------------------------------------- outputs
    @property
    def in_call(self) -> bool:
        """Whether a call is in progress (as of the processed time)."""
        return self._call is not None

    @property
    def live_call(self) -> bool:
        """Whether a call is in progress with a person at the far end, as far as the audio can
        tell: the far end answered the agent, or the call outlasted ``voicemail_within_s`` (a
        voicemail greeting or a recorded prompt before that is not a person)."""
        call = self._call
        if call is None or self._t_s is None:
            return False
        return bool(call.latencies_s[PROSPECT]) or \
            self._t_s - call.start_s > self.config.voicemail_within_s

    @property
    def processed_s(self) -> float:
        """Audio time up to which everything is final (``reorder_s`` behind the input)."""
        return self._t_s if self._t_s is not None else 0.0

    def metrics(self) -> dict[str, float | int | bool]:
        """Scalar fields for the per-second ``metrics`` message, as of :attr:`processed_s`.

        Rolling windows end at the processed time and start no earlier than the call's start
        during a call. They read the window's time off hold, as the call's summary does: the
        shares, turns and monologue leave a hold's speech (the agent asking a colleague) out, and
        a window wholly on hold has no field at all. Fields that are undefined (no speech, no
        response yet) are left out.

        Returns:
            ``in_call``, ``on_hold`` (the call is on hold: why a window may have no field),
            ``call_elapsed_s``, ``monologue_s_current``, ``monologue_s_longest``,
            ``latency_{agent,prospect}_ms_last``, ``responses_{agent,prospect}`` (answers so far
            in the call, so that two equal latencies in a row count twice) and, per window W in
            ``windows_s`` (suffix
            ``_30s``...): ``{agent,prospect}_speech_ratio``, ``silence_ratio``, ``agent_share``
            (the talk-to-listen share), ``turns_{agent,prospect}``, ``monologue_s_longest``,
            ``overlaps_{agent,prospect}``, ``interruptions_{agent,prospect}``,
            ``latency_{agent,prospect}_ms_median``.
        """
        b = self.processed_s
        call = self._call
        out: dict[str, float | int | bool] = {
            "in_call": call is not None,
            "on_hold": call is not None and call.on_hold,
            "call_elapsed_s": round(b - call.start_s, 2) if call is not None else 0.0,
            "monologue_s_current": round(self._current_monologue_s(b), 2),
            "monologue_s_longest": round(max(call.monologue_s, self._current_monologue_s(b)), 2)
            if call is not None else 0.0,
        }
        if call is not None:
            for ch in (AGENT, PROSPECT):
                out[f"responses_{ROLE[ch]}"] = len(call.latencies_s[ch])
                if call.latencies_s[ch]:
                    out[f"latency_{ROLE[ch]}_ms_last"] = round(call.latencies_s[ch][-1] * 1000.0, 1)
        for w in self.config.windows_s:
            # in a call, a window starts at the call's start at the earliest; between calls, at the
            # last call's end (a voicemail's greeting, named so at its beep, is no prospect's speech)
            a = max(b - w, self._t0_s, call.start_s if call is not None else self._last_call_end_s)
            sfx = f"_{w:g}s"
            # the window's time off hold: a hold is nobody's talk (as in the call's summary)
            live = _off_hold(call.holds, a, b) if call is not None else [(a, b)]
            if b > a and not live:
                continue  # wholly on hold: nothing of the call to read (as with no signal)
            span = sum(y - x for x, y in live)
            speech = {AGENT: 0.0, PROSPECT: 0.0}
            for seg in self._segments:
                speech[seg.channel] += _clip_all(seg.start_s, seg.end_s, live)
            for ch in (AGENT, PROSPECT):
                start = self._seg_start[ch]
                if start is not None:
                    speech[ch] += _clip_all(start, b, live)
            both = sum(_clip_all(o.start_s, b if o.end_s is None else o.end_s, live)
                       for o in self._overlaps)
            if span > 0:
                for ch in (AGENT, PROSPECT):
                    out[f"{ROLE[ch]}_speech_ratio{sfx}"] = round(min(1.0, speech[ch] / span), 3)
                union = speech[AGENT] + speech[PROSPECT] - both
                out[f"silence_ratio{sfx}"] = round(min(1.0, max(0.0, 1.0 - union / span)), 3)
            total = speech[AGENT] + speech[PROSPECT]
            if total > 0:
                out[f"agent_share{sfx}"] = round(speech[AGENT] / total, 3)
            # turns begun in the window (the current one too) that reach its time off hold, and
            # the agent's longest stretch of a turn within it off hold: the monologue of the window
            turns = [(t.channel, t.start_s, t.end_s) for t in self._turns if t.end_s > a]
            turns += [(ch, st, self._open_turn_end(ch, b))
                      for ch, st in self._turn_start.items() if st is not None]
            turns = [(c, st, en) for c, st, en in turns if any(st <= y and en >= x for x, y in live)]
            for ch in (AGENT, PROSPECT):
                out[f"turns_{ROLE[ch]}{sfx}"] = sum(c == ch and st >= a for c, st, _ in turns)
            out[f"monologue_s_longest{sfx}"] = round(max(
                (_clip(st, en, x, y) for c, st, en in turns if c == AGENT for x, y in live),
                default=0.0), 2)
            inside = [o for o in self._overlaps if a <= o.start_s <= b and not o.on_hold]
            for ch in (AGENT, PROSPECT):
                out[f"overlaps_{ROLE[ch]}{sfx}"] = sum(o.starter == ch for o in inside)
                out[f"interruptions_{ROLE[ch]}{sfx}"] = sum(
                    o.starter == ch and o.interruption for o in inside)
                lat = [r.latency_s for r in self._responses if r.channel == ch and a <= r.t_s <= b]
                med = _ms(lat, "median")
                if med is not None:
                    out[f"latency_{ROLE[ch]}_ms_median{sfx}"] = med
        return out

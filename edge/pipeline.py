"""The one place that wires the edge stages.

Per 32 ms frame of both channels: signal quality (repair, dead-channel detection) -> Silero VAD
(both channels in one call) -> far-end kind (tones, beeps, hold music veto the far channel's speech)
-> speech gates -> conversation dynamics -> each side's prosody -> the prospect's affect (when
enabled and disclosed); every ``window_s`` a metrics message, then the fatigue stage and the
posture cues. :class:`Pipeline` does no I/O: it takes two-channel blocks and returns
:class:`Message` objects, a wire kind and a body (the box adds site, box, seq and ts).
:func:`analyze` runs it offline.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from edge.affect import AffectConfig, AffectStage, AffectWindow
from edge.campaign import AffectDisclosure, CampaignConfig
from edge.conversation import (
    AGENT,
    PROSPECT,
    Conversation,
    ConversationConfig,
    MetricsWindow,
    Transition,
)
from edge.farend import FarEnd
from edge.fatigue import Fatigue, FatigueBaseline
from edge.frames import FRAME_S, FRAME_SAMPLES, RATE_HZ, Frame, Framer
from edge.prosody import Prosody, ProsodyWindow
from edge.quality import SIGNAL_STATES, SignalQuality
from edge.rate import PAUSE_MAX_S, RateWindow
from edge.runtime import Model, load_model
from edge.signals import AgentBaseline, Signals, Tick, cue_event
from edge.vad import GateConfig, SileroVad, SpeechGate

log = logging.getLogger(__name__)

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
    voice: dict[str, list[bool]] = field(default_factory=lambda: {c: [] for c in CHANNELS})
    """Per frame: whether the channel's prosody stage got the frame's samples (else silence)."""
    segments: dict[str, list[list[float]]] = field(default_factory=lambda: {c: [] for c in CHANNELS})
    affect: list[AffectWindow] = field(default_factory=list)
    """The prospect affect windows the pipeline's affect stage evaluated."""


VAD_MODELS = {"litert": "silero_vad_tflite", "onnx": "silero_vad"}
"""The Silero VAD file of each runtime: the converted TFLite file on LiteRT (the box's default,
2.3 times faster here at the same output, ``miroir bench vad``), or the published ONNX file."""


def load_vad_model(backend: str = "litert") -> Model:
    """Load the checksum-verified Silero VAD model for ``backend`` (``litert`` or ``onnx``)."""
    from models.build import model_path

    if backend not in VAD_MODELS:
        raise ValueError(f"unknown VAD backend {backend!r}: use {' or '.join(VAD_MODELS)}")
    return load_model(model_path(VAD_MODELS[backend]), backend=backend)


VAD_GATE_DBFS = -60.0
"""A channel quieter than this (a phone line's comfort noise, a muted or idle headset), which the
model has scored under :data:`VAD_GATE_MAX_PROB` for half a second, holds its Silero state
(:class:`SileroVad`). Left running through seconds of silence, the state drifts and the next onset
is heard late: on 318 EmoDB utterances not used by the conversation calls, after a -65 dBFS floor,
the onset lagged 24 ms on average after 1 s of silence and 61 ms after 5 s, and the prospect, quiet
through every agent turn, lost whole short answers. Louder frames run as before: a noise floor of
-50 dBFS is held only through :data:`VAD_GATE_ABOVE_FLOOR_DB`."""
VAD_GATE_ABOVE_FLOOR_DB = 6.0
"""On a noisy line or headset, a frame less than this above the channel's own noise floor is held
as well (the same half second of clear silence first). On the 15 conversation calls of
``bench.accuracy_conversation`` with white noise added at -60 to -45 dBFS, the worst call's talk
ratio was 1.7 to 2.3 points off with the fixed gate alone and 1.3 to 1.4 with this; with the shared
real noises at -45 dBFS (``noisy_line_figures``), 2.32 and 1.39. The calls as built (a -65 dBFS
floor) read the same."""
VAD_GATE_MAX_PROB = 0.01
"""Clear silence for the gate: the model itself scores the channel under this."""
HANGUP_BUSY_S = 3.0
"""A busy tone held this long (three French cadences) ends the call where it began: one tone-like
burst is not enough (a high voice holding a vowel can look like one)."""
NEAR_LEAK_DB = 30.0
"""A near frame this many dB or more below the same frame of the line is the line leaking into the
agent's microphone, not the agent (a real overlap has both within about 10 dB)."""
_LEAK_RATIO = 10.0 ** (NEAR_LEAK_DB / 10.0)
REPLAY_FRAMES = 64
"""How far back the line's frames are kept for :meth:`SileroVad.replay` (2 s)."""
REPLAY_ONSET_FRAMES = 16
"""How far before the far-end stage's start of a new sound its onset may be (0.5 s)."""
REPLAY_QUIET_RATIO = 1e-3
"""Frames 30 dB under the loudest of the kept ones are quiet (the music has ended)."""
TONES_AND_MUSIC = frozenset({"ringback", "busy", "beep", "music"})
"""Far-end classes after which the far channel's VAD starts afresh."""
LEAK_WINDOW_FRAMES = 16
"""The line's loudest frame over this many frames (0.5 s) is the leak reference."""
_SEVERITY = {state: i for i, state in enumerate(SIGNAL_STATES)}
_BOTH = ("silence_ratio", "agent_share", "overlap", "interruptions_", "latency_", "talk_ratio",
         "responses_")
"""Fields that need both sides: unknown when either channel has no signal."""
_DEAD_NEAR = ("near_", "agent_", "monologue_s_", "turns_agent", "rate_syl_s_", "f0_hz_",
              "pitch_range_st_", "level_dbfs_", *_BOTH)
_DEAD_FAR = ("far_", "prospect_", "turns_prospect", *_BOTH)


def _reads_dead(key: str, dead: set[str]) -> bool:
    """Whether a metrics field reads a channel that has no signal (its ``*_signal`` flag aside)."""
    if key.endswith(("_signal", "_no_signal_s")) or key == "far_kind":
        return False
    return ("near" in dead and key.startswith(_DEAD_NEAR)) or ("far" in dead and key.startswith(_DEAD_FAR))


def _call_signal(event: dict[str, Any], dead: dict[str, list[list[float]]]) -> None:
    """Add ``call_{near,far}_no_signal_s`` to a ``call_end`` event from each channel's runs of no
    signal (``[start_s, end_s]``); when a channel had no signal for half the call or more, drop
    the summary fields that read it (no signal is not silence), and the prospect's fields of a
    voicemail (a greeting is not a prospect)."""
    end_s = float(event["t_audio_s"])
    duration_s = float(event.get("call_duration_s", 0.0))
    start_s = end_s - duration_s
    gone = set()
    for ch in CHANNELS:
        dead_s = sum(max(0.0, min(b, end_s) - max(a, start_s)) for a, b in dead[ch])
        event[f"call_{ch}_no_signal_s"] = round(dead_s, 1)
        if duration_s > 0 and 2 * dead_s >= duration_s:
            gone.add(ch)
    if event.get("call_end_reason") == "voicemail":
        gone.add("far")  # the far speech was a greeting: nothing of it is the prospect's
    for key in [k for k in event if k.startswith("call_") and _reads_dead(k[5:], gone)]:
        del event[key]


PER_MINUTE_MIN_S = 5.0
"""Shortest prosody window whose pauses and breaths are published as rates per minute."""


def prosody_fields(window: ProsodyWindow, channel: str = "near") -> dict[str, float]:
    """One channel's prosody as flat ``near_*`` or ``far_*`` metrics fields (absent where undefined)."""
    # pauses and breaths are between stretches of voice: none to count in a window without voice,
    # and no rate per minute from the second or so after a start (one pause would read 60 a minute)
    span_s = window.end_s - window.start_s
    minutes = span_s / 60 if window.voiced_ratio > 0 and span_s >= PER_MINUTE_MIN_S else 0.0
    heard = minutes if window.pauses_per_min is not None else 0.0  # no pause audible over the noise
    values = {
        "voiced_ratio": window.voiced_ratio,
        "level_dbfs": window.level_dbfs,
        "f0_median_hz": window.f0_median_hz,
        "pitch_range_st": window.pitch_range_st,
        "pitch_movement_st_s": window.pitch_movement_st_per_s,
        "hnr_db": window.hnr_db,
        "jitter": window.jitter_local,
        "shimmer": window.shimmer_local,
        "rate_syl_s": window.speaking_rate_syl_s,
        "articulation_rate_syl_s": window.articulation_rate_syl_s,
        "pauses_per_min": window.pauses_per_min if heard > 0 else None,
        "breaths_per_min": window.breaths / heard if heard > 0 else None,
        "hesitations_per_min": window.hesitations / minutes if minutes > 0 else None,
    }
    return {f"{channel}_{k}": round(float(v), 4) for k, v in values.items()
            if v is not None and math.isfinite(v)}


class Pipeline:
    """Runs every stage on two-channel audio; returns metrics and events, never audio.

    Args:
        model: the Silero VAD model (see :func:`load_vad_model`).
        gate: hysteresis of the speech gates.
        window_s: length of a metrics window, seconds.
        conversation: definitions of turns, overlaps, latency and calls.
        prosody_window_s: each side's prosody is summarised over this many seconds.
        affect: the prospect's affect stage (far channel only), when the box's settings enable it;
            dropped unless the campaign discloses it (``[affect] disclosed``).
        trace: keep per-frame probabilities and segments (offline analysis only).
        profile: accumulate each stage's CPU time in :attr:`stage_s` (benchmarks).
        campaign: the campaign's cue and fatigue settings (:mod:`edge.campaign`; defaults if None).
        agent_baseline: the agent's cue baseline from a previous shift (learned if None).
        fatigue_baseline: the agent's fatigue baseline from previous shifts (learned if None).
    """

    def __init__(self, model: Model, gate: GateConfig = GateConfig(), window_s: float = 1.0,
                 conversation: ConversationConfig | None = None,
                 prosody_window_s: float = 10.0, affect: AffectStage | None = None,
                 trace: bool = False, profile: bool = False,
                 campaign: CampaignConfig | None = None,
                 agent_baseline: AgentBaseline | None = None,
                 fatigue_baseline: FatigueBaseline | None = None) -> None:
        self.framer = Framer()
        self.quality = SignalQuality(channels=len(CHANNELS))
        self.vad = SileroVad(model, gate_dbfs=VAD_GATE_DBFS, gate_max_prob=VAD_GATE_MAX_PROB,
                             gate_above_floor_db=VAD_GATE_ABOVE_FLOOR_DB)
        self.far_kind = FarEnd()
        self.gates = {c: SpeechGate(gate) for c in CHANNELS}
        self._near_off = gate.off_threshold
        self.conversation = Conversation(conversation or ConversationConfig())
        self.prosody_window_s = prosody_window_s
        self.campaign = campaign or CampaignConfig()
        if affect is not None and not self.campaign.affect.disclosed:
            log.warning("the prospect affect model stays off: the campaign does not disclose it "
                        "([affect] disclosed = true)")
            affect = None
        self.rate_window_s = self.campaign.too_fast.window_s
        self.slow_window_s = self.campaign.too_slow.window_s
        self.prosody = Prosody(history_s=max(prosody_window_s, self.rate_window_s, self.slow_window_s) + 2.0)
        self.far_prosody = Prosody(history_s=prosody_window_s + 2.0, spectral_speed=False)
        """The prospect's prosody (pitch, loudness, rate, pauses: numbers, never an emotion); fed
        the line only while the prospect speaks, silence otherwise, so no tone reads as a voice."""
        self.window = MetricsWindow(window_s)
        self.signals = Signals(self.campaign, agent_baseline)
        self.fatigue = Fatigue(self.campaign.fatigue, fatigue_baseline) \
            if self.campaign.fatigue.enabled else None
        self.shift_gap_s = self.campaign.fatigue.new_shift_idle_min * 60.0
        self._idle_s = 0.0
        self._relearn = False
        self.shifts = 0
        """New shifts started by an idle gap since the stream began."""
        self._flat_below = self.quality.config.flat_below
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        self._worst = [0] * len(CHANNELS)
        """Per channel, the most severe signal state of the current metrics window."""
        self._busy_since_s: float | None = None
        """Where the far end's current busy tone began (audio seconds), until it hangs the call up."""
        self._far_energy: deque[float] = deque([0.0], maxlen=LEAK_WINDOW_FRAMES)
        """The line's frame energies over the last half second."""
        self._far_rows: deque[np.ndarray] = deque(maxlen=REPLAY_FRAMES)
        """The line's last frames, for the VAD to hear again once a tone or music has ended."""
        self._near_flat_s = 0.0
        self._dead: dict[str, list[list[float]]] = {c: [] for c in CHANNELS}
        """Per channel, the runs of no signal, [start_s, end_s]: during a call all of them, out of
        one the last minute's (see :func:`_call_signal`, which reads those inside a call)."""
        self._near_voice_end_s = -math.inf
        """Where the agent's voice (gate or likely onset) was last heard (audio seconds)."""
        self._break = False
        self.private = False
        """Private mode: no stage is fed, nothing is computed or emitted about the call."""
        self._call_state = "idle"
        """The last explicit call state (kept while private, applied when private mode ends)."""
        self._received_s = 0.0
        self._resume_s = 0.0
        self._stages_t0_s = 0.0
        """Audio time of the per-call stages' time 0 (far end, prosody): they start again at 0
        after private mode or a lost device."""
        self.affect = affect
        self._affect_fed = False
        self._affect_last: dict[str, float] = {}
        self.trace = Trace() if trace else None
        self.stage_s: dict[str, float] | None = defaultdict(float) if profile else None
        self._lap_t = 0.0
        """CPU time of the last :meth:`_lap` (profiling only)."""
        self._open: dict[str, float | None] = {c: None for c in CHANNELS}
        self.audio_s = 0.0

    def reset(self) -> None:
        """Start a new stream: every stage back to its initial state."""
        self._reset_call_stages()
        self.framer.reset()
        if self.trace is not None:
            self.trace = Trace()
        self.audio_s = 0.0
        self.signals.reset()
        if self.fatigue is not None:
            self.fatigue.reset()
        self._break = False
        self.private = False
        self._idle_s = 0.0
        self._stages_t0_s = 0.0
        self._received_s = 0.0
        self._resume_s = 0.0

    def _reset_call_stages(self, keep_cooldowns: bool = False) -> None:
        """Every per-call stage back to its initial state; shift baselines and budget are kept,
        and the cue cooldowns if ``keep_cooldowns``."""
        self.quality.reset()
        self._far_energy.clear()
        self._far_energy.append(0.0)
        self._far_rows.clear()
        self._busy_since_s = None
        self.vad.reset()
        self.far_kind.reset()
        for gate in self.gates.values():
            gate.reset()
        self.conversation.reset()
        self.prosody.reset()
        self.far_prosody.reset()
        self.window.reset()
        if self.affect is not None:
            self.affect.reset()
        self._affect_fed = False
        self._affect_last = {}
        self._open = {c: None for c in CHANNELS}
        self.signals.reset_call(keep_cooldowns)
        self._near_flat_s = 0.0
        self._near_voice_end_s = -math.inf
        self._dead = {c: [] for c in CHANNELS}
        self._worst = [0] * len(CHANNELS)  # the dropped window's flags are not the next one's

    def learned_baselines(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The agent's cue and fatigue baselines once learned (to keep for the next shift)."""
        signals = self.signals.baseline
        agent = signals.as_dict() if signals.ready(self.campaign.alerts.baseline_speech_s) else None
        fatigue = self.fatigue.baseline.as_dict() if self.fatigue is not None and self.fatigue.ready \
            else None
        return agent, fatigue

    def _new_shift(self, t_s: float) -> list[Message]:
        """After a long idle gap: the fatigue stage, the break and the cue budget start over; the
        baselines learned so far are kept (as a restart would load them)."""
        out = self._end_break(t_s)
        for stage in (self.signals, self.fatigue):
            if stage is None:
                continue
            if self._relearn:
                stage.forget_baseline()
            else:
                stage.keep_baseline()
            stage.reset()
        self._relearn = False
        self.signals.hold(self._call_state == "hold")
        self.shifts += 1
        log.info("new shift at %.0f s of audio, after %.0f min with nobody speaking",
                 t_s, self._idle_s / 60.0)
        return out

    def forget_baselines(self) -> None:
        """Learn the agent's baselines afresh from the next shift on (they are too old)."""
        self._relearn = True

    def relearn_baselines(self) -> list[Message]:
        """Another agent took the seat: a new shift starts now and learns the baselines afresh
        (call it outside a call); return the ``cue_off`` events of the previous agent's cues."""
        out = [Message("event", e) for e in self.signals.close(self.audio_s)]
        self._relearn = True
        return out + self._new_shift(self.audio_s)

    def _resume(self) -> None:
        """Restart the per-call stages at the audio received so far (after private mode or a lost
        device); a call state set meanwhile (a hold, a hang-up) holds from now on."""
        self._resume_s = self._received_s
        self._stages_t0_s = math.ceil(self._received_s / FRAME_S - 1e-9) * FRAME_S
        self._apply_call_state()

    def input_counts(self) -> dict[str, int]:
        """Bad input since the pipeline began, both channels, for the box's status: 32 ms frames
        that held NaN or infinity from the driver, and frames that clipped."""
        return {"nan_frames": int(self.quality.nan_frames.sum()),
                "clipped_frames": int(self.quality.clipped_frames.sum())}

    def interrupt(self) -> list[Message]:
        """The audio stopped (the capture device is gone): end the call now and start every
        per-call stage afresh for the audio that comes back; the shift goes on.

        Returns:
            The events that close the call (``call_end`` with its summary, open cues' ``cue_off``).
        """
        if self.private:
            return []
        if self._busy_since_s is not None:  # a hang-up being confirmed: the prospect hung up
            self.conversation.hang_up(self._busy_since_s)
            self.conversation.defer(None)
        out = self.finish()
        self._reset_call_stages(keep_cooldowns=True)
        self._resume()
        return out

    def gap(self, seconds: float) -> None:
        """Time without audio (the headset unplugged) counts as idle: a break long enough starts
        a new shift when speech comes back; the hourly cue budget and the cooldowns see it pass.

        Args:
            seconds: how long the audio was gone, wall-clock seconds.
        """
        self._idle_s += max(0.0, seconds)
        self.signals.elapse(max(0.0, seconds))

    def stop(self) -> list[Message]:
        """The box stops: the call in progress, its cues and the break suggestion end here."""
        return self.finish() + self._end_break(self.audio_s)

    def _end_break(self, t_s: float) -> list[Message]:
        """The break suggestion's ``cue_off`` if it is on (private mode, a new shift, a stop)."""
        if not self._break:
            return []
        self._break = False
        index = (self.fatigue.state.index if self.fatigue is not None else None) or 0.0
        return [Message("event", cue_event("cue_off", "take_break", t_s, "medium", index,
                                           self.campaign.fatigue.break_on))]

    def set_private(self, on: bool) -> list[Message]:
        """Enter or leave private mode; return the one event that says so (nothing if unchanged).

        While private, blocks are framed (to keep the audio clock) and dropped: no stage is fed,
        no metric or event is produced. Leaving private resets every per-call stage, so nothing of
        the private stretch (nor of the call it interrupted) reaches later windows; the agent's
        shift baselines, fatigue tracking and alert budget are kept, as they hold nothing of it.
        """
        if on == self.private:
            return []
        t = round(self._received_s, 3)
        # the open cues end here, the break suggestion too (the fact that the seat goes private
        # says as much; a suggestion that still holds comes back after)
        out = [Message("event", e) for e in self.signals.close(self.audio_s)] + \
            self._end_break(self.audio_s) if on else []
        self.private = on
        self._reset_call_stages()  # drop the open call, pending events and partial windows
        if not on:
            self._resume()
        out.append(Message("event", {"name": "private_on" if on else "private_off",
                                     "channel": "both", "t_audio_s": t}))
        return out

    def _lap(self, stage: str) -> None:
        """Add the CPU time since the last lap to ``stage`` (only when profiling: :attr:`stage_s`)."""
        if self.stage_s is None:
            return
        now = time.process_time()
        self.stage_s[stage] += now - self._lap_t
        self._lap_t = now

    def __call__(self, block: np.ndarray) -> list[Message]:
        """Process a (2, n) float32 block at 16 kHz; return the messages it produced.

        Each 32 ms frame of the block goes through the steps below, in this order (each step's
        CPU time is a stage of :attr:`stage_s`)."""
        out: list[Message] = []
        self._lap_t = time.process_time() if self.stage_s is not None else 0.0
        self._received_s += block.shape[-1] / RATE_HZ
        frames = self.framer(block)
        self._lap("framing")
        for frame in frames:
            if self.private or frame.start_s < self._resume_s:
                self._skip_frame(frame.start_s)
                continue
            frame = self._repair(frame)
            self._lap("quality")
            near_prob, far_prob = self.vad(frame).tolist()
            self._lap("vad")
            far_prob, events = self._follow_line(frame, far_prob)
            out += events
            self._track_no_signal(frame)
            self._lap("farend")
            near_prob, far_prob = self._speech_probs(frame, near_prob, far_prob)
            transitions = self._gate(frame.start_s, near_prob, far_prob)
            near, far = self.gates["near"].speaking, self.gates["far"].speaking
            out += self._count_idle(frame, near or far)
            out += [self._speech_event(ch, change, at_s, frame.start_s)
                    for ch, change, at_s in transitions]
            self._lap("gates")
            out += self._converse(frame, near, far, transitions)
            self._lap("conversation")
            self._feed_prosody(frame, near, far, near_prob)
            self._lap("prosody")
            if self.affect is not None:
                self._feed_affect(frame, near, far)
                self._lap("affect")
            out += self._close_window(frame, near, far)
            self.audio_s = frame.start_s + FRAME_S
        return out

    def _skip_frame(self, start_s: float) -> None:
        """A frame of a private stretch: only the audio clock and the idle time move on."""
        # nothing is computed about a private stretch, not even a frame straddling its ends; it
        # counts as idle (nothing of it may show that the agent worked on)
        self.audio_s = start_s + FRAME_S
        self._idle_s += FRAME_S

    def _repair(self, frame: Frame) -> Frame:
        """The frame as the quality stage repaired it; the window's worst signal state updated."""
        repaired = self.quality(frame.samples)
        if repaired is not frame.samples:
            frame = type(frame)(repaired, frame.rate_hz, frame.start_s, frame.index)
        worst = self._worst
        for i, state in enumerate(self.quality.states):
            if state != "ok" and _SEVERITY[state] > worst[i]:
                worst[i] = _SEVERITY[state]
        return frame

    def _follow_line(self, frame: Frame, far_prob: float) -> tuple[float, list[Message]]:
        """The far-end stage on the line's frame: a new kind of sound (tone, beep, music, speech)
        is published and told to the conversation; a busy tone held :data:`HANGUP_BUSY_S` hangs
        the call up. Returns the line's speech probability (heard afresh after a tone or music)
        and the ``far_kind`` event, if any."""
        far_kind, start_s, line = self.far_kind, frame.start_s, frame.samples[1]
        out: list[Message] = []
        kind = far_kind.label
        self._far_rows.append(line.copy())
        if far_kind(line) != kind:
            since_s = self._stages_t0_s + far_kind.since_frame * FRAME_S
            if kind in TONES_AND_MUSIC and far_kind.label not in TONES_AND_MUSIC:
                far_prob = self._hear_line_afresh(round((start_s - since_s) / FRAME_S) + 1)
            out.append(Message("event", {"name": "far_kind", "channel": "far",
                                         "kind": far_kind.label, "t_audio_s": round(since_s, 3)}))
            self._busy_since_s = since_s if far_kind.label == "busy" else None
            # while a hang-up is being confirmed, the conversation waits at the tone's start
            self.conversation.defer(self._busy_since_s)
            if far_kind.label == "beep":
                self.conversation.voicemail(since_s)
            if "music" in (kind, far_kind.label):  # hold music keeps the call open
                self.conversation.line_hold(far_kind.label == "music", since_s)
        if self._busy_since_s is not None and start_s - self._busy_since_s >= HANGUP_BUSY_S:
            # the prospect hung up: the call ends where the busy tone began
            self.conversation.hang_up(self._busy_since_s)
            self.conversation.defer(None)
            self._busy_since_s = None
        return far_prob, out

    def _track_no_signal(self, frame: Frame) -> None:
        """Extend each channel's runs of no signal (a dead line counts) by the frame."""
        start_s, duration_s = frame.start_s, frame.duration_s
        near_state, far_state = self.quality.states
        for ch, dead in (("near", near_state == "none"),
                         ("far", far_state == "none" or self.far_kind.label == "dead")):
            if dead:
                runs = self._dead[ch]
                if runs and runs[-1][1] >= start_s - 1e-6:
                    runs[-1][1] = start_s + duration_s
                else:
                    if not self.conversation.in_call:  # no call to summarise them for
                        runs[:] = [r for r in runs if r[1] > start_s - 60.0]
                    runs.append([start_s, start_s + duration_s])

    def _speech_probs(self, frame: Frame, near_prob: float, far_prob: float) -> tuple[float, float]:
        """The VAD's probabilities with what is nobody speaking set to 0: a channel without
        signal, the line leaking into the agent's microphone, the line's tones and music."""
        near_state, far_state = self.quality.states
        if near_state == "none":
            near_prob = 0.0  # a dead channel, a tone or hold music is nobody speaking
        # the line leaking into the agent's mic (earpiece to microphone) is not the agent:
        # Silero ignores the level, so a near frame far quieter than the line's loudest frame
        # of the last half second is no speech (as an echo canceller's double-talk detector)
        far_row = frame.samples[1]
        self._far_energy.append(float(np.dot(far_row, far_row)))
        if near_prob >= 0.1:
            near_row = frame.samples[0]
            if float(np.dot(near_row, near_row)) * _LEAK_RATIO < max(self._far_energy):
                near_prob = 0.0
        if far_state == "none" or self.far_kind.veto:
            far_prob = 0.0
        return near_prob, far_prob

    def _gate(self, start_s: float, near_prob: float, far_prob: float) -> list[Transition]:
        """Both speech gates fed their probability; returns their transitions (channel, change,
        back-dated time), each recorded as a segment."""
        transitions = []
        for ch, prob in (("near", near_prob), ("far", far_prob)):
            gate = self.gates[ch]
            change = gate(prob, start_s)
            if self.trace is not None:
                self.trace.prob[ch].append(round(prob, 4))
            if change is not None:
                transitions.append((ch, change, gate.transition_s))
                self._segment(ch, change, gate.transition_s)
        return transitions

    def _count_idle(self, frame: Frame, speaking: bool) -> list[Message]:
        """Count the frame as idle unless someone speaks; speech after an idle gap of
        :attr:`shift_gap_s` starts a new shift (its events)."""
        out: list[Message] = []
        if speaking:
            if self._idle_s >= self.shift_gap_s:  # before the cue stage hears who speaks
                out += self._new_shift(frame.start_s)
            self._idle_s = 0.0
        else:
            self._idle_s += frame.duration_s
        return out

    def _converse(self, frame: Frame, near: bool, far: bool,
                  transitions: list[Transition]) -> list[Message]:
        """The conversation stage's events of the frame, then the cues the cue stage polls (a flat
        agent channel's time counted)."""
        start_s, duration_s = frame.start_s, frame.duration_s
        out = self._call_events(self.conversation(start_s, duration_s, near, far, transitions), start_s)
        near_row = frame.samples[0]
        flat = float(near_row.max() - near_row.min()) < self._flat_below
        self._near_flat_s = self._near_flat_s + duration_s if flat else 0.0
        out += [Message("event", e) for e in self.signals.poll(
            start_s + duration_s, self._near_flat_s, self.far_kind.label)]
        return out

    def _feed_prosody(self, frame: Frame, near: bool, far: bool, near_prob: float) -> None:
        """Each side's prosody stage fed its own voice, silence otherwise (to keep its clock)."""
        start_s, duration_s, samples = frame.start_s, frame.duration_s, frame.samples
        # the agent's voice only: the gate's speech, a likely onset the gate has not confirmed
        # yet, and the agent's own pauses (up to PAUSE_MAX_S after its voice, while the line is
        # quiet); silence otherwise, to keep the clock, so that the line leaking into the mic or
        # a neighbour's voice never reads as the agent's pitch, rate or phonation
        if near or near_prob >= self._near_off:
            self._near_voice_end_s = start_s + duration_s
            agent = True
        else:
            agent = not far and start_s - self._near_voice_end_s < PAUSE_MAX_S
        silence = self._silence[: samples.shape[1]]
        self.prosody(samples[0] if agent else silence)
        # the prospect's voice only (the speech gate: a tone's first frames, before the far-end
        # stage names it, would read as a pitch); silence otherwise, to keep the clock
        self.far_prosody(samples[1] if far else silence)
        if self.trace is not None:
            self.trace.voice["near"].append(agent)
            self.trace.voice["far"].append(far)

    def _feed_affect(self, frame: Frame, near: bool, far: bool) -> None:
        """The prospect's affect stage fed the frame during a live call; its latest window kept
        for the next metrics message."""
        assert self.affect is not None
        # only a person at the far end in a live call (not a voicemail greeting, not the
        # ringing), and never while the agent's channel is dead: the agent could be on the
        # line without the box hearing it on its own channel
        if self.conversation.live_call:
            found = self.affect(frame, near or self.quality.states[0] == "none", far)
            if found is not None:
                self._affect_last = {"prospect_arousal": round(found.arousal, 3),
                                     "prospect_tension": round(found.tension, 3)}
                if self.trace is not None:
                    self.trace.affect.append(found)
            self._affect_fed = True
        elif self._affect_fed:
            self.affect.reset()
            self._affect_fed = False

    def _close_window(self, frame: Frame, near: bool, far: bool) -> list[Message]:
        """The frame counted in the metrics window; when it completes a window, its ``metrics``
        message, then the fatigue stage's and the cues' events."""
        start_s, duration_s = frame.start_s, frame.duration_s
        window = self.window(start_s, duration_s, near, far)
        if window is None:
            self._lap("metrics")  # the window's accounting, on every frame
            return []
        self._lap("metrics")
        self.prosody.catch_up()  # the agent's cues read the window just closed
        self._lap("prosody")
        long = self._prosody_window(self.prosody_window_s)
        body, far_long = self._metrics(asdict(window), long)
        out = [Message("metrics", body)]
        self._lap("metrics")
        out += self._signals(body, long, far_long, start_s + duration_s)
        self._lap("signals")
        return out

    def _hear_line_afresh(self, frames: int) -> float:
        """The line's VAD started afresh and run again over its last ``frames`` frames and the
        quiet stretch just before them, if any (the music ended, then a voice began: the model
        hears an onset best after silence); returns the line's speech probability now.

        After seconds of hold music or a tone, the state the model built on it hears the next
        voice late or not at all (see :meth:`SileroVad.replay`)."""
        rows = list(self._far_rows)
        energy = [float(np.dot(r, r)) for r in rows]
        quiet = max(energy) * REPLAY_QUIET_RATIO
        first = max(0, len(rows) - frames)
        # the new sound is confirmed a little after it began: look back for the quiet before it
        last_quiet = next((i for i in range(first - 1, max(first - REPLAY_ONSET_FRAMES, 0) - 1, -1)
                           if energy[i] < quiet), None)
        if last_quiet is not None:
            first = last_quiet
            while first > 0 and energy[first - 1] < quiet:
                first -= 1
        return self.vad.replay(1, rows[first:])

    def _prosody_window(self, seconds: float) -> ProsodyWindow | None:
        """The agent's prosody over the last ``seconds``; None before the first analysed hop
        (the prosody stage analyses in batches of about 1 s, e.g. just after private mode)."""
        if not self.prosody.analysed:
            return None
        return self.prosody.window(seconds)

    def _rate_window(self, seconds: float) -> RateWindow | None:
        """The agent's syllable rate and pauses over the last ``seconds`` (None as above)."""
        return self.prosody.rate_window(seconds) if self.prosody.analysed else None

    def _signals(self, body: dict[str, Any], long: ProsodyWindow | None,
                 far_long: ProsodyWindow | None, now_s: float) -> list[Message]:
        """Fatigue fields (added to ``body``) and the cues of this metrics window."""
        out: list[Message] = []
        window_s = float(body["window_s"])
        answers = self.conversation.take_responses()
        if self.fatigue is not None:
            state = self.fatigue(long, window_s, [r.latency_s for r in answers if r.channel == AGENT])
            body.update(state.fields())
            if state.break_suggested != self._break:
                self._break = state.break_suggested
                idx = state.index or 0.0
                name = "cue_on" if self._break else "cue_off"
                out.append(Message("event", cue_event(name, "take_break", now_s, "medium", idx,
                                                      self.campaign.fatigue.break_on)))
        short = self._rate_window(self.rate_window_s)
        slow = short if self.slow_window_s == self.rate_window_s else self._rate_window(self.slow_window_s)
        tick = Tick(t_s=now_s, metrics=body, short=short, slow=slow, long=long,
                    near_flat_s=self._near_flat_s, voice_t0_s=self._stages_t0_s,
                    far_filled_pauses_s=far_long.filled_pauses_s if far_long is not None else (),
                    far_answers=tuple((r.t_s, r.latency_s) for r in answers if r.channel == PROSPECT))
        out += [Message("event", e) for e in self.signals(tick)]
        return out

    def _metrics(self, body: dict[str, Any], long: ProsodyWindow | None = None
                 ) -> tuple[dict[str, Any], ProsodyWindow | None]:
        """The metrics body of a window, and the prospect's prosody window it read (None while the
        line has no signal)."""
        dead = set()
        for i, (ch, state) in enumerate(zip(CHANNELS, self.quality.states, strict=True)):
            if state != "none":  # the worst the window saw (a NaN burst, clipping) is reported
                state = SIGNAL_STATES[max(self._worst[i], _SEVERITY[state])]
            far_dead = ch == "far" and self.far_kind.label == "dead"
            if far_dead and state == "ok":
                state = "none"  # the far-end stage knows a flat line after 3 frames, not 2 s
            body[f"{ch}_signal"] = state
            if state == "none" or far_dead:  # a NaN or stuck line keeps its flag, and is no signal
                dead.add(ch)
        self._worst = [0] * len(CHANNELS)
        body["far_kind"] = self.far_kind.label
        body.update(self.conversation.metrics())
        # a rolling window that reaches back over a stretch of no signal would read it as silence
        now_s = self.conversation.processed_s
        for w in self.conversation.config.windows_s:
            gone = {ch for ch in CHANNELS if any(end_s > now_s - w for _, end_s in self._dead[ch])}
            sfx = f"_{w:g}s"
            for key in [k for k in body if k.endswith(sfx) and _reads_dead(k, gone)]:
                del body[key]
        if long is not None and "near" not in dead:
            body.update(prosody_fields(long))
        far_long = None
        if "far" not in dead and self.far_prosody.analysed:
            far_long = self.far_prosody.window(self.prosody_window_s)
            body.update(prosody_fields(far_long, "far"))
        # no signal is not silence: nothing that reads the dead channel's speech is published
        for key in [k for k in body if _reads_dead(k, dead)]:
            del body[key]
        body.update(self._affect_last)  # the prospect's latest window, never the agent's
        self._affect_last = {}
        return body, far_long

    def call_state(self, state: str) -> None:
        """Explicit call signal from a softphone or CTI connector (``idle``, ``active``, ``hold``)."""
        self._call_state = state
        if not self.private:
            self._apply_call_state()

    def _apply_call_state(self) -> None:
        self.conversation.call_state(self._call_state)
        self.signals.hold(self._call_state == "hold")
        if self._call_state == "idle":
            self.signals.ended()

    def _segment(self, ch: str, change: str, t_s: float) -> None:
        if change == "start":
            self._open[ch] = t_s
            return
        start = self._open[ch]
        self._open[ch] = None
        if self.trace is not None and start is not None:
            self.trace.segments[ch].append([round(start, 3), round(t_s, 3)])

    def finish(self) -> list[Message]:
        """End of stream: close open speech (its ``speech_end``) and the call; return the last
        events."""
        if self.private:
            return []
        out: list[Message] = []
        for ch in CHANNELS:
            if self._open[ch] is not None:
                self._segment(ch, "end", self.audio_s)
                out.append(self._speech_event(ch, "end", self.audio_s, self.audio_s))
        return out + self._call_events(self.conversation.finish(), self.audio_s)

    def _speech_event(self, ch: str, change: str, at_s: float, now_s: float) -> Message:
        """The ``speech_start`` or ``speech_end`` event of a gate's ``change`` at ``at_s``, told
        to the cue stage as of ``now_s`` (seconds)."""
        name = "speech_start" if change == "start" else "speech_end"
        body = {"name": name, "channel": ch, "t_audio_s": round(at_s, 3)}
        self.signals.event(body, now_s)
        return Message("event", body)

    def _call_events(self, events: list[dict[str, Any]], now_s: float) -> list[Message]:
        """The conversation's events, each after the cues it raised; a call's summary says how
        long each channel had no signal (see :func:`_call_signal`)."""
        out: list[Message] = []
        for e in events:
            out += [Message("event", c) for c in self.signals.event(e, now_s)]
            if e["name"] == "call_end":
                _call_signal(e, self._dead)
            out.append(Message("event", e))
        return out


PROGRESS_EVERY_S = 600.0
""":func:`analyze` logs how far it has got every this many seconds of audio (about 10 s of work
here: an hour's recording takes over a minute)."""


ANALYZE_MB_PER_HOUR = 150.0
"""Memory :func:`analyze` is counted on per hour of two-channel audio (the per-second metrics, the
VAD traces, each side's per-hop prosody features), a margin over what it keeps: 134.9 and 139.1 MB
at 16 and 8 kHz measured on 2026-11-29 (c56c66b; 135.3 to 135.6 and 138.5 to 138.8 on 749694e),
149 and 151 MB when this was set. Re-measure with ``python -m bench.analyze --minutes 1 60 --rate
16000 8000`` (``rss_mb_per_hour_16000``, ``rss_mb_per_hour_8000``: the peak's growth from one
minute to an hour)."""
ANALYZE_BASE_MB = 64.0
"""Memory the VAD model and its runtime take when :func:`load_vad_model` loads them."""


class VoiceProsody:
    """Each side's prosody over a whole recording, fed block by block alongside the pipeline: the
    samples its live prosody stages read (each side's voice, silence elsewhere: no tone, music or
    leak reads as a pitch), as a quality stage of its own repaired them (non-finite samples zeroed,
    a DC offset removed: a recorder's offset is no louder or clearer a voice). Holds per-hop
    features, never the recording."""

    def __init__(self) -> None:
        self.quality = {c: SignalQuality(channels=1) for c in CHANNELS}
        self.prosody = {c: Prosody(history_s=math.inf, spectral_speed=False) for c in CHANNELS}
        self._held = np.zeros((len(CHANNELS), 0), dtype=np.float32)
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.float32)

    def __call__(self, block: np.ndarray, voice: dict[str, list[bool]]) -> None:
        """Take a (2, n) block the pipeline has just read, and its frames' voice flags so far
        (consumed: the lists are emptied)."""
        held = np.concatenate([self._held, block], axis=1) if self._held.shape[1] else block
        frames = len(voice[CHANNELS[0]])
        for i, c in enumerate(CHANNELS):
            quality, prosody, voiced = self.quality[c], self.prosody[c], voice[c]
            for k in range(frames):
                a = k * FRAME_SAMPLES
                repaired = quality(held[i:i + 1, a:a + FRAME_SAMPLES])
                prosody(repaired[0] if voiced[k] else self._silence)
            voiced.clear()
        self._held = held[:, frames * FRAME_SAMPLES:]

    def summary(self, channels: list[str], duration_s: float) -> dict[str, dict[str, Any]]:
        """The scalar functionals of each of ``channels`` over the whole recording (the samples
        past the last whole frame read as silence)."""
        from edge.prosody import HOP_S

        out = {}
        for c in channels:
            prosody = self.prosody[c]
            if self._held.shape[1]:
                prosody(np.zeros(self._held.shape[1], dtype=np.float32))
            clip = prosody.window(duration_s + 1.0, flush=True).as_dict()
            clip["hop_s"] = HOP_S
            out[c] = _prosody_summary(clip)
        return out


def analyze(audio: np.ndarray | Iterable[np.ndarray], model: Model, *, window_s: float = 1.0,
            affect: AffectConfig | None = None,
            campaign: CampaignConfig | None = None,
            progress_every_s: float = PROGRESS_EVERY_S,
            expected_s: float | None = None) -> dict[str, Any]:
    """Run the pipeline over a whole two-channel recording and summarise it.

    Args:
        audio: (2, n) float32 samples at 16 kHz, near first; or such blocks, in order (a long
            recording read block by block is never held in memory).
        model: the Silero VAD model.
        window_s: metrics window, seconds.
        affect: the prospect affect settings (off unless enabled).
        campaign: cue and fatigue settings (defaults if None).
        progress_every_s: log the progress every this many seconds of audio.
        expected_s: the recording's length for the progress lines, when ``audio`` is blocks.

    Returns:
        A JSON-ready dict: the length (``duration_s``) and the frame step (``frame_s``); each
        channel's speech share, signal and time without signal (``call``); the calls and their
        summaries (``conversation``); each side's prosody over the whole recording
        (``prosody``); the prospect affect windows (``affect``); the cues raised with their
        labels (``cues``); the last fatigue figures (``fatigue``); each call's published
        summary, the ``call_end`` fields (``call_summaries``); the ``events`` and per-window
        ``metrics`` a box would publish; VAD probabilities at 32 ms steps and speech segments
        (``vad``).
    """
    if isinstance(audio, np.ndarray):  # a second at a time: no copy of the recording
        expected_s = audio.shape[1] / RATE_HZ
        whole = audio
        audio = (whole[:, i:i + RATE_HZ] for i in range(0, whole.shape[1], RATE_HZ))
    stage = None
    if affect is not None and affect.enabled:  # as on a box: the prospect_tense cue reads it
        from edge.affect import AffectModel, AffectStage

        stage = AffectStage(AffectModel(affect.backend), affect)
        # asking for it is the engineer's statement that the recording's call disclosed it
        campaign = replace(campaign or CampaignConfig(), affect=AffectDisclosure(disclosed=True))
    pipe = Pipeline(model, window_s=window_s, trace=True, campaign=campaign, affect=stage,
                    conversation=ConversationConfig(keep_history=True))
    assert pipe.trace is not None
    voice = VoiceProsody()
    messages: list[Message] = []
    step = max(1, round(progress_every_s)) * RATE_HZ  # in samples
    samples, next_log = 0, step
    for block in audio:
        messages += pipe(block)
        voice(block, pipe.trace.voice)
        samples += block.shape[1]
        while samples >= next_log:
            if expected_s is None or samples < expected_s * RATE_HZ:  # not at the very end
                total = "" if expected_s is None else f" of {expected_s / 60.0:.1f}"
                log.info("analysed %.1f%s min of audio", next_log / RATE_HZ / 60.0, total)
            next_log += step
    messages += pipe.finish()
    duration_s = samples / RATE_HZ
    speech_s = {c: sum(e - s for s, e in pipe.trace.segments[c]) for c in CHANNELS}

    metrics = [m.body for m in messages if m.kind == "metrics"]
    # over the whole recording, not its last frame: a channel with no signal in most windows is
    # "none"; otherwise the most severe other state any window saw
    signal: dict[str, str] = {}
    for i, c in enumerate(CHANNELS):
        seen = [m[f"{c}_signal"] for m in metrics] or [pipe.quality.states[i]]
        alive = [s for s in seen if s != "none"]
        signal[c] = max(alive, key=_SEVERITY.__getitem__) if 2 * len(alive) >= len(seen) else "none"
    prosody = voice.summary([c for c in CHANNELS if signal[c] != "none"], duration_s)
    history = pipe.conversation.history
    from edge.affect import analysis_section

    return {
        "duration_s": round(duration_s, 3),
        "frame_s": FRAME_S,
        "call": {
            **{f"{c}_speech_ratio": round(speech_s[c] / duration_s, 4) if duration_s else 0.0
               for c in CHANNELS},
            **{f"{c}_signal": signal[c] for c in CHANNELS},
            **{f"{c}_no_signal_s": round(window_s * sum(m[f"{c}_signal"] == "none" for m in metrics), 1)
               for c in CHANNELS},
        },
        "conversation": {
            "calls": [asdict(call) for call in history.calls] if history else [],
        },
        "prosody": prosody,
        # what the box's own stage evaluated, behind the box's gates (a live call, the agent heard)
        "affect": analysis_section(pipe.trace.affect, stage) if stage else {"enabled": False},
        "cues": cue_episodes([m.body for m in messages if m.kind == "event"]),
        "fatigue": {"fatigue_index": None, "break_suggested": False,
                    **next((_fatigue_fields(m.body) for m in reversed(messages)
                            if m.kind == "metrics" and "fatigue_phonation_min" in m.body), {})},
        "call_summaries": [{k: v for k, v in m.body.items() if k.startswith("call_")}
                           for m in messages if m.kind == "event" and m.body["name"] == "call_end"],
        "events": [m.body for m in messages if m.kind == "event"],
        "metrics": metrics,
        "vad": {c: {"prob": pipe.trace.prob[c], "segments": pipe.trace.segments[c]}
                for c in CHANNELS},
    }


def _fatigue_fields(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k.startswith("fatigue_") or k == "break_suggested"}


def cue_episodes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pair ``cue_on`` / ``cue_off`` events into episodes with their French and English labels.

    A ``cue_on`` for a cue already on is an escalation: it updates the open episode's severity and
    evidence.
    """
    from edge.signals import CUES

    open_: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for e in events:
        if e["name"] == "cue_on" and e["cue"] in open_:
            open_[e["cue"]].update(severity=e["severity"], evidence_value=e["evidence_value"])
        elif e["name"] == "cue_on":
            info = CUES[e["cue"]]
            ep = {"cue": e["cue"], "label_en": info.en, "label_fr": info.fr, "channel": e["channel"],
                  "start_s": e["t_audio_s"], "end_s": None, "severity": e["severity"],
                  "evidence_value": e["evidence_value"], "evidence_threshold": e["evidence_threshold"],
                  "evidence_unit": e["evidence_unit"]}
            open_[e["cue"]] = ep
            out.append(ep)
        elif e["name"] == "cue_off" and e["cue"] in open_:
            open_.pop(e["cue"])["end_s"] = e["t_audio_s"]
    # a cue raised in the last window and closed by the end of the recording at the same instant
    # says nothing (nor does the call's summary count it)
    return [ep for ep in out if ep["end_s"] != ep["start_s"]]


def _prosody_summary(clip: dict[str, Any]) -> dict[str, Any]:
    """The scalar functionals of :func:`edge.prosody.analyze_clip` (tracks left out)."""
    return {k: v for k, v in clip.items() if not isinstance(v, list | np.ndarray)}

"""The MQTT topic and payload contract shared by the box and the dashboard.

Topics: ``miroir/v1/<site>/<box>/<kind>`` going up (kinds in :data:`UP_KINDS`) and
``miroir/v1/<site>/<box>/cmd`` going down. Payloads are JSON objects. Every field that may
appear is named in :data:`ALLOWED_FIELDS` with its type: nothing else is accepted, which is how
the contract proves that no audio (no array of samples) and no agent affect ever leaves a box.

Stream messages (``metrics``, ``event``) carry a per-box sequence number ``seq`` that increases by
one per message and survives restarts; the dashboard inserts idempotently on ``(box, seq)``.
``status`` is retained state (latest wins) and carries no ``seq``.

This module imports only the standard library: both the box and the dashboard use it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 1
"""Version of the payload schema; bumped on any incompatible change."""

TOPIC_ROOT = "miroir/v1"
ID_PATTERN = re.compile(r"^[a-z0-9-]{1,32}$")
UP_KINDS = ("status", "metrics", "event")
CMD_KIND = "cmd"
MAX_PAYLOAD_BYTES = 4096
"""Largest encoded payload (compact JSON), checked on encoding and decoding; the broker's
``max_packet_size`` is twice this (docs/wire.md), so nothing larger goes through."""
MAX_TEXT_CHARS = 200
"""Longest free-text field (``status.capture_error``, ``status.settings_error``,
``status.update_rolled_back`` and ``version``): text for site IT, never speech."""

TALK_STATES = ("silence", "agent", "prospect", "overlap")
EVENT_NAMES = ("speech_start", "speech_end", "call_start", "call_end", "overlap_start", "overlap_end",
               "interruption", "far_kind", "cue_on", "cue_off", "private_on", "private_off")
CUE_IDS = ("too_fast", "too_slow", "monologue", "no_pause", "monotone", "talking_over",
           "slow_response", "low_energy", "prospect_hesitating", "prospect_tense", "take_break")
"""Posture cues (edge.signals.CUES holds their French and English labels)."""
CUE_SEVERITIES = ("low", "medium", "high")
CUE_UNITS = ("ratio", "s", "db", "index", "answers")
STATUS_STATES = ("online", "offline")
STATUS_EXPIRY_S = 30
"""MQTT v5 Message Expiry Interval of a box's ``online`` status, in seconds (three of its 10 s
periods, after which the dashboard shows a silent box offline anyway): the broker drops an older
one from the dashboard's session queue and from the retained copy, and says how much of it is
left when it delivers one, so the dashboard knows how long a status waited. An ``offline`` status
(a stop, the Last Will) has none: it stays true until the box is back."""
RESTART_REASONS = ("update", "reload")
"""``status.restart``, on the ``offline`` status of a clean stop that is a planned restart: the
update's (``miroir edge update``) or a good settings ``reload``'s (the agent's exit 75)."""
CMD_ACTIONS = ("private_on", "private_off", "identify", "reload", "resend", "call_state",
               "forget_baselines")
"""``forget_baselines``: the seat changed hands at the command's ``ts``; the box forgets the agent
baselines it learned before then (``status.baselines_ts`` says since when its own were learned)."""
CALL_STATES = ("idle", "active", "hold")
AFFECT_STATES = ("off", "on", "undisclosed", "blocked", "failed")
"""The prospect affect stage: not enabled in the box's settings, running, off because the campaign
does not disclose it to prospects, kept off by the install check (the channels may be swapped), or
its model would not load."""
CHANNELS = ("near", "far")

_num = (int, float)
MAX_INT = 2**63 - 1
"""Largest integer of any field (SQLite's INTEGER); each field's own range (:data:`RANGES`) is
narrower."""
MAX_SEQ = 10**13
"""Largest sequence number: a new box numbers from its clock in milliseconds (4.1e12 in 2100) and
sends a few messages a second; under JavaScript's exact integers (2**53), which the pages read."""

# Conversation dynamics (edge.conversation.Conversation.metrics): rolling windows of 30 s and 60 s.
_CONVERSATION_METRICS: dict[str, tuple[type, ...]] = {
    "in_call": (bool,),
    "on_hold": (bool,),
    "call_elapsed_s": _num,
    "monologue_s_current": _num,
    "monologue_s_longest": _num,
    "latency_agent_ms_last": _num,
    "latency_prospect_ms_last": _num,
    "responses_agent": (int,),
    "responses_prospect": (int,),
    **{f"{name}_{w}s": types for w in (30, 60) for name, types in {
        "agent_speech_ratio": _num, "prospect_speech_ratio": _num, "silence_ratio": _num,
        "agent_share": _num, "turns_agent": (int,), "turns_prospect": (int,),
        "monologue_s_longest": _num, "overlaps_agent": (int,), "overlaps_prospect": (int,),
        "interruptions_agent": (int,), "interruptions_prospect": (int,),
        "latency_agent_ms_median": _num, "latency_prospect_ms_median": _num,
    }.items()},
}
# Each side's prosody over the last prosody window (edge.prosody.ProsodyWindow), absent when the
# window held too little voice. Behavioural and physical measures only: no emotion, ever.
_PROSODY_METRICS: dict[str, tuple[type, ...]] = {
    f"{channel}_{name}": _num for channel in ("near", "far") for name in (
        "voiced_ratio", "level_dbfs", "f0_median_hz", "pitch_range_st", "pitch_movement_st_s",
        "hnr_db", "jitter", "shimmer", "rate_syl_s", "articulation_rate_syl_s", "pauses_per_min",
        "breaths_per_min", "hesitations_per_min")
}
SIGNAL_STATES = ("ok", "dc", "clipped", "nan", "none")
"""Signal quality of a channel (edge.quality); ``none`` is a dead channel: no speech metrics."""
FAR_KINDS = ("speech", "ringback", "busy", "beep", "music", "silence", "dead")
"""What the far channel carries (edge.farend); only ``speech`` may count as the prospect."""

# Per-call summary, flat on the ``call_end`` event (edge.conversation.CallSummary.fields).
_CALL_SUMMARY: dict[str, tuple[type, ...]] = {
    "call_end_reason": (str,),
    **{f"call_{name}": _num for name in (
        "duration_s", "hold_s", "agent_speech_ratio", "prospect_speech_ratio", "silence_ratio",
        "overlap_ratio", "agent_share", "talk_ratio", "latency_agent_ms_median",
        "latency_agent_ms_mean", "latency_prospect_ms_median", "latency_prospect_ms_mean",
        "monologue_s_longest", "rate_syl_s_median", "rate_syl_s_p10", "rate_syl_s_p90",
        "f0_hz_median", "pitch_range_st_median", "level_dbfs_median", "near_no_signal_s",
        "far_no_signal_s")},
    # Cue counts and seconds per call (edge.signals.Signals.summary).
    "call_cues": (int,),
    **{f"call_cue_{c}_n": (int,) for c in CUE_IDS if c != "take_break"},
    **{f"call_cue_{c}_s": _num for c in CUE_IDS if c != "take_break"},
    **{f"call_{name}": (int,) for name in (
        "overlaps", "overlaps_agent", "overlaps_prospect", "overlaps_both", "interruptions_agent",
        "interruptions_prospect", "responses_agent", "responses_prospect", "turns_agent",
        "turns_prospect")},
}

# Field name -> accepted Python types (after JSON decoding). Common header first.
_HEADER: dict[str, tuple[type, ...]] = {
    "v": (int,),
    "site": (str,),
    "box": (str,),
    "ts": _num,
}
ALLOWED_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "status": {
        **_HEADER,
        "state": (str,),
        "version": (str,),
        "seq_last": (int,),
        "outbox_depth": (int,),
        "dropped": (int,),
        "overruns": (int,),
        "capture_ok": (bool,),
        "capture_reopens": (int,),
        "capture_error": (str,),
        "nan_frames": (int,),
        "clipped_frames": (int,),
        "seq_first": (int,),
        "seq_origin": (int,),
        "private": (bool,),
        "call_state": (str,),
        "cmd_refused": (int,),
        "reload_refused": (int,),
        "settings_error": (str,),
        "pipeline_errors": (int,),
        "fields_dropped": (int,),
        "prospect_affect_state": (str,),
        "baselines_ts": _num,
        "update_rolled_back": (str,),
        "update_rolled_back_ts": _num,
        "restart": (str,),
        # Fleet health for site IT (edge/health.py).
        "cert_days_left": _num,
        "cpu_temp_c": _num,
        "throttled": (bool,),
        "clock_synced": (bool,),
        "clock_offset_ms": _num,
        "clock_shared": (bool,),
    },
    "metrics": {
        **_HEADER,
        "seq": (int,),
        "t_start": _num,
        "window_s": _num,
        "near_speech_ratio": _num,
        "far_speech_ratio": _num,
        "near_talking": (bool,),
        "far_talking": (bool,),
        "talk_state": (str,),
        "near_signal": (str,),
        "far_signal": (str,),
        "far_kind": (str,),
        **_CONVERSATION_METRICS,
        **_PROSODY_METRICS,
        # The prospect's affect (far channel only, when the campaign discloses it): 0..1.
        "prospect_arousal": _num,
        "prospect_tension": _num,
        # Fatigue and vocal load (edge.fatigue): a physical state of the agent, never an emotion.
        "fatigue_index": _num,
        "fatigue_phonation_min": _num,
        "break_suggested": (bool,),
        **{f"fatigue_{k}_z": _num for k in (
            "pitch", "pitch_range", "level", "rate", "hnr", "jitter", "shimmer", "latency")},
    },
    "event": {
        **_HEADER,
        "seq": (int,),
        "name": (str,),
        "channel": (str,),
        "t_audio_s": _num,
        "duration_s": _num,
        "kind": (str,),
        # cue_on / cue_off (edge.signals): the cue, its severity and the numbers that raised it.
        "cue": (str,),
        "severity": (str,),
        "evidence_value": _num,
        "evidence_threshold": _num,
        "evidence_unit": (str,),
        **_CALL_SUMMARY,
    },
    # Down-going command (dashboard -> box), on the box's own ``cmd`` topic only.
    "cmd": {
        **_HEADER,
        "action": (str,),
        "from_seq": (int,),
        "to_seq": (int,),
        "call_state": (str,),
    },
}
REQUIRED_FIELDS: dict[str, frozenset[str]] = {
    "status": frozenset({"v", "site", "box", "ts", "state"}),
    "metrics": frozenset(
        {"v", "site", "box", "ts", "seq", "talk_state"}
    ),
    "event": frozenset({"v", "site", "box", "ts", "seq", "name", "channel"}),
    "cmd": frozenset({"v", "site", "box", "ts", "action"}),
}
_ENUMS: dict[str, tuple[str, ...]] = {
    "talk_state": TALK_STATES,
    "near_signal": SIGNAL_STATES,
    "far_kind": FAR_KINDS,
    "kind": FAR_KINDS,
    "far_signal": SIGNAL_STATES,
    "name": EVENT_NAMES,
    "channel": (*CHANNELS, "both"),
    "call_end_reason": ("silence", "signal", "hangup", "voicemail", "end_of_stream"),
    "state": STATUS_STATES,
    "restart": RESTART_REASONS,
    "action": CMD_ACTIONS,
    "call_state": CALL_STATES,
    "prospect_affect_state": AFFECT_STATES,
    "cue": CUE_IDS,
    "severity": CUE_SEVERITIES,
    "evidence_unit": CUE_UNITS,
}
_TEXTS = ("capture_error", "settings_error", "version", "update_rolled_back")
DAY_S = 86400.0
"""Seconds in a day."""
MAX_TS = 4102444800.0
"""Latest ``ts``: 2100-01-01 (the dashboard also refuses more than a day ahead of its clock). No
earliest but the epoch: a Pi has no real-time clock, and a box whose NTP never answered dates its
messages from a stale clock."""
MAX_AUDIO_S = 1e9
"""Latest time of the box's audio clock (``t_start``, ``t_audio_s``): 31 years since its
pipeline started."""
MAX_SPAN_S = 30 * DAY_S
"""Longest span a box measures (a call, a monologue, a cue episode, a silence): a call that the
softphone's signal alone ends can stay open for days, not for a month."""
MAX_COUNT = 10**12
"""Largest counter (messages, frames, commands, turns of a call): 32 ms frames of two channels
for 500 years."""
MAX_WINDOW_COUNT = 2000
"""Largest count over a rolling window (``*_30s``, ``*_60s``): at most one per 32 ms frame, 1875
in 60 s."""

_UNIT = re.compile(r"_(syl_s|st_s|per_min|dbfs|db|hz|st|ms|s|min|z|ratio|share)(?:_|$)")
"""The unit a field's name carries: the first of these words in it (``call_rate_syl_s_median``
is in ``syl_s``, ``monologue_s_longest_30s`` in ``s``)."""
_UNIT_RANGES: dict[str, tuple[float, float]] = {
    "ratio": (0.0, 1.0),  # a share of time or of the talk
    "share": (0.0, 1.0),
    "dbfs": (-120.0, 10.0),  # a level: the mean square floored at 1e-12; full scale is 0 dBFS,
    # a DC offset taken out of a clipped signal can pass it a little
    "db": (-100.0, 100.0),  # HNR of a correlation kept within 1e-6..1 - 1e-6: +-60 dB
    "hz": (20.0, 2000.0),  # a voice's pitch (the box's tracker reads 60 to 400 Hz)
    "st": (0.0, 80.0),  # a pitch range within 20..2000 Hz: 12 * log2(100)
    "st_s": (0.0, 8000.0),  # pitch movement: at most 80 st in each 10 ms hop
    "syl_s": (0.0, 50.0),  # syllable nuclei at least 70 ms apart: 29 a second over 2 of them
    "per_min": (0.0, 600.0),  # pauses of 200 ms or more, hesitations of 300 ms: 300 a minute
    "ms": (0.0, 60_000.0),  # a response time: 10 s at most, later it is a new exchange
    "s": (0.0, MAX_SPAN_S),
    "min": (0.0, MAX_AUDIO_S / 60.0),  # phonation time of a shift
    "z": (-1e5, 1e5),  # drift in standard errors: a feature's range over its floor, 4000 at most
}
_SEQS = ("seq", "seq_last", "seq_first", "seq_origin", "from_seq", "to_seq")
_RANGE_EXCEPTIONS: dict[str, tuple[float, float]] = {
    "v": (0, 2**31 - 1),  # then it must be SCHEMA_VERSION
    "ts": (0.0, MAX_TS),
    "baselines_ts": (0.0, MAX_TS),  # when the box's agent baselines were learned (0: none yet)
    "update_rolled_back_ts": (0.0, MAX_TS),  # when the box's last update was rolled back
    **{name: (0, MAX_SEQ) for name in _SEQS},
    "t_start": (0.0, MAX_AUDIO_S),
    "t_audio_s": (0.0, MAX_AUDIO_S),
    "window_s": (0.0, 60.0),  # 1 s by default, 0.5 to 10 s in the box's settings
    "call_talk_ratio": (0.0, 1e8),  # the agent's speech over the prospect's: a 30-day call over
    # one 32 ms frame of the prospect's is 8.1e7
    "prospect_arousal": (0.0, 1.0),
    "prospect_tension": (0.0, 1.0),
    "fatigue_index": (0.0, 100.0),
    **{f"{channel}_{name}": (0.0, 10.0) for channel in ("near", "far")
       for name in ("jitter", "shimmer")},  # relative differences of consecutive cycles
    "evidence_value": (-1e6, 1e6),  # in its evidence_unit (ratio, s, db, index, answers)
    "evidence_threshold": (-1e6, 1e6),
    "cert_days_left": (-36525.0, 36525.0),  # negative once expired; certificates last 825 days
    "cpu_temp_c": (-100.0, 200.0),  # a SoC sensor (a Pi's reads -40 to 125 degrees C)
    "clock_offset_ms": (-3_600_000.0, 3_600_000.0),  # the kernel slews at most 0.5 s
}


def _range_of(name: str, types: tuple[type, ...]) -> tuple[float, float] | None:
    """A numeric field's plausible range: an exception, else by type and unit; None if not a
    number (a text, a flag)."""
    if name in _RANGE_EXCEPTIONS:
        return _RANGE_EXCEPTIONS[name]
    if types == (int,):
        return (0, MAX_WINDOW_COUNT) if name.endswith(("_30s", "_60s")) else (0, MAX_COUNT)
    if float not in types:
        return None
    unit = _UNIT.search(name)
    if unit is None:
        raise RuntimeError(f"wire field {name!r} has no range: name its unit or add an exception")
    return _UNIT_RANGES[unit.group(1)]


RANGES: dict[str, tuple[float, float]] = {
    name: rng for fields in ALLOWED_FIELDS.values() for name, types in fields.items()
    if (rng := _range_of(name, types)) is not None}
"""Every number's plausible range (inclusive), from its unit and meaning: a box's honest output
keeps within it (``tests/test_wire_ranges.py`` runs the pipeline over every kind of test audio),
and a value outside is refused (the dashboard quarantines the message; the box drops the field,
see :func:`out_of_range`)."""


class WireError(ValueError):
    """A topic or payload that breaks the contract."""


@dataclass(frozen=True)
class Topic:
    """A parsed up-going topic."""

    site: str
    box: str
    kind: str


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a valid site or box id, else raise :class:`WireError`."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise WireError(f"{what} {value!r:.40} is not 1 to 32 characters of [a-z0-9-]")
    return value


def topic(site: str, box: str, kind: str) -> str:
    """Build the topic of one box's ``kind`` (an up kind or ``cmd``)."""
    if kind not in (*UP_KINDS, CMD_KIND):
        raise WireError(f"unknown message kind {kind!r}")
    return f"{TOPIC_ROOT}/{check_id(site, 'site')}/{check_id(box, 'box')}/{kind}"


def site_filters(site: str) -> list[str]:
    """Subscription filters for every up-going message of a site (one per kind, never ``cmd``)."""
    return [f"{TOPIC_ROOT}/{check_id(site, 'site')}/+/{kind}" for kind in UP_KINDS]


def parse_topic(name: str) -> Topic:
    """Split an up-going topic into site, box and kind, refusing anything else."""
    parts = name.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT:
        raise WireError(f"topic {name!r} is not {TOPIC_ROOT}/<site>/<box>/<kind>")
    site, box, kind = parts[2], parts[3], parts[4]
    check_id(site, "site")
    check_id(box, "box")
    if kind not in UP_KINDS:
        raise WireError(f"topic {name!r} has unknown kind {kind!r}")
    return Topic(site, box, kind)


def validate(kind: str, msg: dict[str, Any]) -> dict[str, Any]:
    """Check a decoded message against the allow-list; return it unchanged or raise.

    Args:
        kind: One of :data:`UP_KINDS`, or ``cmd``.
        msg: The decoded JSON object.

    Returns:
        The same dict, known to respect the contract.
    """
    allowed = ALLOWED_FIELDS.get(kind)
    if allowed is None:
        raise WireError(f"unknown message kind {kind!r}")
    if not isinstance(msg, dict):
        raise WireError("payload is not a JSON object")
    extra = sorted(set(msg) - set(allowed))
    if extra:
        raise WireError(f"{kind}: field(s) not in the allow-list: {', '.join(n[:40] for n in extra)}")
    missing = sorted(REQUIRED_FIELDS[kind] - set(msg))
    if missing:
        raise WireError(f"{kind}: missing field(s): {', '.join(missing)}")
    for name, value in msg.items():
        types = allowed[name]
        # bool is an int in Python: refuse it where a number is expected, and vice versa.
        if isinstance(value, bool) and bool not in types:
            raise WireError(f"{kind}.{name}: expected {types[0].__name__}, got bool")
        if not isinstance(value, types):
            raise WireError(f"{kind}.{name}: expected {types[0].__name__}, got {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise WireError(f"{kind}.{name}: not a finite number")
        if isinstance(value, int) and not -MAX_INT - 1 <= value <= MAX_INT:  # SQLite's INTEGER
            raise WireError(f"{kind}.{name}: integer out of range")
        if isinstance(value, str) and name in _TEXTS and len(value) > MAX_TEXT_CHARS:
            raise WireError(f"{kind}.{name}: longer than {MAX_TEXT_CHARS} characters")
        if name in _ENUMS and value not in _ENUMS[name]:
            raise WireError(f"{kind}.{name}: {value!r:.40} not one of {', '.join(_ENUMS[name])}")
    if msg["v"] != SCHEMA_VERSION:
        raise WireError(f"{kind}: schema version {msg['v']} is not {SCHEMA_VERSION}")
    check_id(msg["site"], "site")
    check_id(msg["box"], "box")
    if "seq" in msg and msg["seq"] < 1:
        raise WireError(f"{kind}.seq: must be >= 1")
    for name in out_of_range(msg):
        lo, hi = RANGES[name]
        raise WireError(f"{kind}.{name}: {msg[name]!r} outside {lo:g}..{hi:g}")
    if kind == CMD_KIND:
        _check_cmd(msg)
    return msg


def out_of_range(msg: dict[str, Any]) -> list[str]:
    """The numeric fields of ``msg`` outside their range (:data:`RANGES`), not finite included.

    The box drops these from its own messages, rather than lose the message (a stage's bug)."""
    return [name for name, value in msg.items()
            if name in RANGES and isinstance(value, int | float) and not isinstance(value, bool)
            and not RANGES[name][0] <= value <= RANGES[name][1]]


def _check_cmd(msg: dict[str, Any]) -> None:
    action = msg["action"]
    if action == "resend":
        if "from_seq" not in msg or msg["from_seq"] < 1:
            raise WireError("cmd resend: from_seq >= 1 is required")
        if msg.get("to_seq", msg["from_seq"]) < msg["from_seq"]:
            raise WireError("cmd resend: to_seq < from_seq")
    elif "from_seq" in msg or "to_seq" in msg:
        raise WireError(f"cmd {action}: from_seq/to_seq only go with resend")
    if (action == "call_state") != ("call_state" in msg):
        raise WireError("cmd: call_state goes with, and only with, action call_state")


def cmd_message(site: str, box: str, action: str, ts: float, **extra: Any) -> dict[str, Any]:
    """Build a validated ``cmd`` message for one box (``extra``: from_seq, to_seq, call_state)."""
    return validate(CMD_KIND, {"v": SCHEMA_VERSION, "site": site, "box": box, "ts": ts,
                               "action": action, **extra})


def encode(kind: str, msg: dict[str, Any]) -> bytes:
    """Validate and serialise a message to compact UTF-8 JSON."""
    data = json.dumps(validate(kind, msg), separators=(",", ":"), allow_nan=False).encode()
    if len(data) > MAX_PAYLOAD_BYTES:
        raise WireError(f"{kind}: payload of {len(data)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    return data


def decode(kind: str, payload: bytes) -> dict[str, Any]:
    """Parse and validate a payload received on a topic of ``kind``."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError(f"{kind}: payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        msg = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, nested too deep
        raise WireError(f"{kind}: payload is not JSON ({type(exc).__name__}: {exc})") from None
    return validate(kind, msg)


def status_message(site: str, box: str, state: str, ts: float, **extra: Any) -> dict[str, Any]:
    """Build a ``status`` message (``extra`` must be allow-listed fields)."""
    return validate("status", {"v": SCHEMA_VERSION, "site": site, "box": box, "ts": ts,
                               "state": state, **extra})

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
STREAM_KINDS = ("metrics", "event")
CMD_KIND = "cmd"
MAX_PAYLOAD_BYTES = 4096

TALK_STATES = ("silence", "agent", "prospect", "overlap")
EVENT_NAMES = ("speech_start", "speech_end")
STATUS_STATES = ("online", "offline")
CHANNELS = ("near", "far")

_num = (int, float)

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
    },
    "event": {
        **_HEADER,
        "seq": (int,),
        "name": (str,),
        "channel": (str,),
        "t_audio_s": _num,
    },
}
REQUIRED_FIELDS: dict[str, frozenset[str]] = {
    "status": frozenset({"v", "site", "box", "ts", "state"}),
    "metrics": frozenset(
        {"v", "site", "box", "ts", "seq", "near_speech_ratio", "far_speech_ratio", "talk_state"}
    ),
    "event": frozenset({"v", "site", "box", "ts", "seq", "name", "channel"}),
}
_ENUMS: dict[str, tuple[str, ...]] = {
    "talk_state": TALK_STATES,
    "name": EVENT_NAMES,
    "channel": CHANNELS,
    "state": STATUS_STATES,
}
_RATIOS = ("near_speech_ratio", "far_speech_ratio")


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
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise WireError(f"{what} {value!r} is not 1 to 32 characters of [a-z0-9-]")
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
        kind: One of :data:`UP_KINDS`.
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
        raise WireError(f"{kind}: field(s) not in the allow-list: {', '.join(extra)}")
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
        if name in _ENUMS and value not in _ENUMS[name]:
            raise WireError(f"{kind}.{name}: {value!r} not one of {', '.join(_ENUMS[name])}")
    if msg["v"] != SCHEMA_VERSION:
        raise WireError(f"{kind}: schema version {msg['v']} is not {SCHEMA_VERSION}")
    check_id(msg["site"], "site")
    check_id(msg["box"], "box")
    if "seq" in msg and msg["seq"] < 1:
        raise WireError(f"{kind}.seq: must be >= 1")
    for name in _RATIOS:
        if name in msg and not 0.0 <= msg[name] <= 1.0:
            raise WireError(f"{kind}.{name}: {msg[name]} outside 0..1")
    return msg


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
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"{kind}: payload is not JSON ({exc})") from None
    return validate(kind, msg)


def status_message(site: str, box: str, state: str, ts: float, **extra: Any) -> dict[str, Any]:
    """Build a ``status`` message (``extra`` must be allow-listed fields)."""
    return validate("status", {"v": SCHEMA_VERSION, "site": site, "box": box, "ts": ts,
                               "state": state, **extra})

"""The box's settings: a frozen dataclass, loaded from an operator-edited TOML file.

Unknown keys and wrong types are refused with the key's name. Secrets (the private key) are
paths, given by systemd credentials on a real box, never values in the file.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from miroir.files import read_regular
from miroir.wire import WireError, check_id


class SettingsError(ValueError):
    """A settings file that cannot be used, with the offending key in the message."""


@dataclass(frozen=True)
class EdgeSettings:
    """Everything a box needs to run."""

    site: str
    """Site id, `[a-z0-9-]{1,32}`."""
    box: str
    """This box's id, `[a-z0-9-]{1,32}`; also the CN of its client certificate."""
    broker_host: str = "127.0.0.1"
    """Host name or address of the site's MQTT broker."""
    broker_port: int = 8883
    """TLS port of the site's MQTT broker."""
    ca_file: Path | None = None
    """The site CA certificate that signed the broker's certificate."""
    cert_file: Path | None = None
    """This box's client certificate."""
    key_file: Path | None = None
    """This box's private key (a systemd credential on a real box)."""
    state_dir: Path = Path("/var/lib/miroir")
    """Writable directory for the outbox (metrics only, never audio)."""
    releases_root: Path | None = Path("/data/miroir-releases")
    """Where updates keep the releases (``miroir edge update --root``): the status reports the
    last release rolled back there until an update holds; None reports nothing."""
    capture_device: str | None = None
    """ALSA/PortAudio name of the headset adapter: stereo (left agent, right line), or the agent's
    mono device when ``capture_far_device`` is set."""
    capture_far_device: str | None = None
    """The line's mono device, when the adapter exposes two mono devices."""
    capture_rate_hz: int | None = None
    """Open the device at this rate (resampled to 16 kHz); None tries 16 kHz, then the device's own,
    then 48, 44.1 and 8 kHz."""
    keepalive_s: int = 10
    """MQTT keepalive; the broker publishes the Last Will after 1.5 times this."""
    window_s: float = 1.0
    """Length of a metrics message's window."""
    vad_on_threshold: float = 0.5
    """Speech probability at which speech may start."""
    vad_off_threshold: float = 0.35
    """Speech probability below which speech may end."""
    vad_min_speech_ms: float = 64.0
    """Minimum run above the on threshold before speech starts."""
    vad_min_silence_ms: float = 160.0
    """Minimum run below the off threshold before speech ends."""
    call_start_on_speech: bool = True
    """The prospect's speech on the line starts a call; false where a softphone or CTI connector
    sends the call state (``cmd`` or the control socket), the only call signal then."""
    call_end_silence_s: float = 20.0
    """A call ends after this long with no speech on either side; 0: only on the call signal
    (or a busy tone: the prospect hung up). Where ``call_start_on_speech`` is false, the call
    signal alone ends calls and this is not used."""
    model_backend: str = "litert"
    """Runtime for the models: ``litert`` (LiteRT, the default: the fastest here) or ``onnx``."""
    campaign_file: Path | None = None
    """The campaign's cue settings (TOML, see docs/cues.md); None uses the documented defaults."""
    control_socket: Path | None = None
    """Local control socket (private-mode button, softphone/CTI call state), see edge/control.py;
    None: none. The image uses /run/miroir/control."""
    control_group: str | None = "miroir-control"
    """Group that may send to the control socket (mode 0660) if it exists; else owner only."""
    baseline_max_age_h: float = 72.0
    """The agent's baselines are kept at most this long after they were learned (hours): loaded at
    start from ``state_dir`` only when younger, relearned at the first new shift after; 0 learns
    afresh every start."""
    clock_wait_s: float = 0.0
    """A box with no message numbers on record (new, or its state wiped) numbers from its clock:
    wait up to this long (seconds) for NTP to set the clock first, and likewise when the clock reads
    before the saved baselines were learned (else they are learned afresh); 0 does not wait. The
    image's settings say 120: a Pi has no real-time clock, and boots at a stale time."""
    clock_shared: bool = False
    """The box runs on the dashboard's own server and reads its clock (``miroir demo``'s
    simulated boxes): its status says so, and the IT page names the clock as the server's rather
    than as the box's. Never set on a real box: its own clock is what IT must see."""
    affect_enabled: bool = False
    """Run the prospect affect model (far channel only). Only for a campaign whose call script
    tells the prospect about emotion recognition (EU AI Act Art. 50(3)); off by default."""

    def __post_init__(self) -> None:
        try:
            check_id(self.site, "site")
            check_id(self.box, "box")
        except WireError as exc:
            raise SettingsError(str(exc)) from None
        if not 0.0 < self.vad_off_threshold <= self.vad_on_threshold < 1.0:
            raise SettingsError("vad_off_threshold must be > 0 and <= vad_on_threshold < 1")
        if not self.broker_host.strip():  # paho would raise at the connection, in a traceback
            raise SettingsError(f"broker_host {self.broker_host!r} is empty: give the site "
                                "broker's host name or address")
        if not 1 <= self.broker_port <= 65535:
            raise SettingsError(f"broker_port {self.broker_port} is not a TCP port (1..65535)")
        for name, (lo, hi) in _RANGES.items():
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and lo <= value <= hi):
                raise SettingsError(f"{name} {value} is outside the allowed range {lo:g}..{hi:g}")
        if not (self.call_end_silence_s == 0 or 5.0 <= self.call_end_silence_s <= 600.0):
            raise SettingsError(f"call_end_silence_s {self.call_end_silence_s} is outside the "
                                "allowed range 5..600 (0: only on the call signal)")
        if self.model_backend not in ("onnx", "litert"):
            raise SettingsError(f"model_backend {self.model_backend!r}: use onnx or litert")


_RANGES: dict[str, tuple[float, float]] = {
    "keepalive_s": (1, 3600),
    "window_s": (0.5, 10.0),
    "vad_min_speech_ms": (0.0, 1000.0),
    "vad_min_silence_ms": (0.0, 2000.0),
    "capture_rate_hz": (8000, 192000),
    "baseline_max_age_h": (0.0, 24.0 * 365),
    "clock_wait_s": (0.0, 3600.0),
}
"""Allowed ranges of the numeric settings (the checks name the key and the range)."""


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """Convert a TOML value to the field's type, or raise naming the key."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    if isinstance(value, Path) and Path in allowed:  # an override: `edge run --state-dir`
        value = str(value)
    if isinstance(value, str) and "\0" in value:  # no path, device or group name holds one
        raise SettingsError(f"setting {name!r}: a NUL character in {value!r}")
    for typ in allowed:
        if typ is Path and isinstance(value, str):
            return Path(value)
        if typ is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if typ in (int, str, bool) and type(value) is typ:
            return value
    names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed if t is not type(None))
    span = f" (allowed range {_RANGES[name][0]:g}..{_RANGES[name][1]:g})" if name in _RANGES else ""
    raise SettingsError(f"setting {name!r}: expected {names}, got {value!r}{span}")


def from_mapping(data: dict[str, Any]) -> EdgeSettings:
    """Build settings from a mapping, refusing unknown keys and wrong types."""
    hints = typing.get_type_hints(EdgeSettings)
    known = {f.name for f in dataclasses.fields(EdgeSettings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SettingsError(f"unknown setting(s): {', '.join(unknown)} "
                            f"(known: {', '.join(sorted(known))})")
    missing = [n for n in ("site", "box") if n not in data]
    if missing:
        raise SettingsError(f"missing setting(s): {', '.join(missing)}")
    return EdgeSettings(**{k: _coerce(k, hints[k], v) for k, v in data.items()})


def state_dir_problem(state_dir: Path) -> str | None:
    """Why the box cannot keep its state (the outbox) in ``state_dir``, made if missing; None if
    it can."""
    if state_dir.exists() and not state_dir.is_dir():
        return "not a directory"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot be made ({exc.strerror})"
    return None


AGENT_LOCK = "agent.lock"
"""File of the state directory that a running agent holds locked (``fcntl.flock``), with its pid:
a second agent on the same directory (one started by hand beside the service) refuses to start.
The kernel lets the lock go when the agent ends, even killed (``kill -9``, a crash)."""


def hold_state_dir(state_dir: Path) -> int:
    """Lock ``state_dir`` for this process's life and return the lock's file descriptor (closing
    it lets the lock go).

    Raises:
        SettingsError: another agent holds it (its pid named when it wrote it), or the lock file
            cannot be opened.
    """
    path = state_dir / AGENT_LOCK
    try:  # (not inherited by the commands the agent runs: Python opens it close-on-exec)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise SettingsError(f"cannot lock {path} ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            raise SettingsError(f"cannot lock {path} ({exc.strerror})") from None
        who = f" (pid {holder})" if holder.isdigit() and holder.isascii() else ""
        raise SettingsError(f"in use by another agent{who}: stop it first (`sudo systemctl stop "
                            "miroir-box` for the service); nothing was changed") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd


def held_by_another(state_dir: Path) -> bool:
    """True if another agent holds ``state_dir``'s lock; creates and writes nothing."""
    try:
        fd = os.open(state_dir / AGENT_LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EACCES)
    finally:
        os.close(fd)
    return False


def load(path: Path, **overrides: Any) -> EdgeSettings:
    """Load a TOML settings file; ``overrides`` (not None) win over the file."""
    try:
        data = tomllib.loads(read_regular(path).decode())
    except FileNotFoundError:
        raise SettingsError(f"{path}: no such settings file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:  # tomllib recurses into nested arrays and tables
        raise SettingsError(f"{path}: not valid TOML (nested too deep)") from None
    except OSError as exc:  # a directory, no permission
        raise SettingsError(f"{path}: cannot read the settings file ({exc.strerror})") from None
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return from_mapping(data)
    except SettingsError as exc:  # named by its file, as a campaign file's errors are
        raise SettingsError(f"{path}: {exc}") from None

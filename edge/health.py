"""Fleet health facts for site IT, as scalar ``status`` fields (see :mod:`miroir.wire`).

Software version, days until the box certificate expires, CPU temperature and throttling (the
firmware's flags in ``/sys``, else ``vcgencmd``), clock synchronisation and offset (the kernel's
``adjtimex``, which NTP daemons such as systemd-timesyncd steer; where the service's sandbox denies
it, systemd-timesyncd's flag file and no offset), plus the outbox depth and audio
overruns the loop already counts. Each probe that is unavailable is simply left out. Also the
heartbeat file the update health check reads.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime as dt
import functools
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.update import rolled_back
from miroir import wire
from miroir.files import atomic_write, read_json

log = logging.getLogger(__name__)

THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")
THROTTLED_FILE = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")
"""The Pi firmware's throttling flags in hex (Raspberry Pi kernels): readable in the service's
sandbox, where ``vcgencmd`` cannot reach ``/dev/vcio``."""
TIMESYNC_DIR = Path("/run/systemd/timesync")
HEARTBEAT_FILE = "heartbeat.json"
RESTART_FILE = "restarting.json"
"""Note left in the agent's state folder by ``miroir edge update`` just before it restarts the
agent: the agent that stops then says so in its ``offline`` status (``restart``)."""
RESTART_NOTE_MAX_AGE_S = 120.0
"""A note older than this is not the stop's (the update's ``systemctl restart`` waits 90 s)."""
_TIME_ERROR = 5
_STA_NANO = 0x2000
_THROTTLED_NOW_MASK = 0xF  # under-voltage, frequency capped, throttled, soft temperature limit


class _Timex(ctypes.Structure):
    _fields_ = [  # ctypes layout of struct timex (linux/timex.h)
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long), ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


@functools.cache
def _libc() -> ctypes.CDLL:
    # find_library runs ldconfig in a subprocess: once per process, not once per status
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def clock_facts(timesync_dir: Path = TIMESYNC_DIR) -> dict[str, Any]:
    """``clock_synced`` and ``clock_offset_ms`` from the kernel's NTP state (read only).

    The box's service may not call ``adjtimex`` (``ProtectClock=yes`` forbids the whole call,
    even reading): then ``clock_synced`` comes from systemd-timesyncd's flag file, with no offset.
    """
    try:
        tx = _Timex()  # modes = 0: read only
        state = _libc().adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        state = -1
    if state < 0:
        if timesync_dir.is_dir():  # timesyncd runs: it touches the file once it has synchronized
            return {"clock_synced": (timesync_dir / "synchronized").exists()}
        return {}
    scale = 1e6 if tx.status & _STA_NANO else 1e3
    return {"clock_synced": state != _TIME_ERROR, "clock_offset_ms": round(tx.offset / scale, 3)}


def cpu_temp_c(path: Path = THERMAL_ZONE) -> float | None:
    """CPU temperature in °C, or None where the board has no thermal zone."""
    try:
        return round(int(path.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


def throttled(flags_file: Path = THROTTLED_FILE) -> bool | None:
    """True if the Pi is under-volted or throttled right now (the firmware's flags, from sysfs or
    ``vcgencmd get_throttled``); None where neither is there."""
    try:
        return bool(int(flags_file.read_text().strip(), 16) & _THROTTLED_NOW_MASK)
    except (OSError, ValueError):
        pass
    exe = shutil.which("vcgencmd")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=2,
                             check=True).stdout
        return bool(int(out.strip().split("=")[1], 16) & _THROTTLED_NOW_MASK)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def cert_days_left(cert_file: Path | None, now: dt.datetime | None = None) -> float | None:
    """Days until a PEM certificate expires (negative once expired), or None if unreadable."""
    if cert_file is None:
        return None
    try:
        not_after = _not_after(str(cert_file), os.stat(cert_file).st_mtime_ns)
    except (OSError, ValueError, KeyError):
        return None
    now = now or dt.datetime.now(dt.UTC)
    return round((not_after - now).total_seconds() / 86400.0, 2)


@functools.lru_cache(maxsize=4096)
def _not_after(path: str, mtime_ns: int) -> dt.datetime:
    """A certificate's expiry, parsed once per file version (``mtime_ns`` keys the cache)."""
    import ssl

    decoded = ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]
    return dt.datetime.strptime(decoded["notAfter"], "%b %d %H:%M:%S %Y %Z").replace(tzinfo=dt.UTC)


def health_facts(version: str, cert_file: Path | None = None, *, outbox_depth: int | None = None,
                 overruns: int | None = None, releases_root: Path | None = None) -> dict[str, Any]:
    """All health facts available on this machine, as allow-listed ``status`` fields.

    Args:
        version: Software version running.
        cert_file: The box's client certificate.
        outbox_depth: Messages waiting in the outbox.
        overruns: Audio blocks lost by the capture.
        releases_root: Where updates keep releases: the last one rolled back, if any, is
            reported (``update_rolled_back``, ``update_rolled_back_ts``) until an update holds
            (then ``update_rolled_back`` is empty).

    Returns:
        Scalar fields; probes not available here are left out.
    """
    facts: dict[str, Any] = {"version": version}
    optional = {"cert_days_left": cert_days_left(cert_file), "cpu_temp_c": cpu_temp_c(),
                "throttled": throttled(), "outbox_depth": outbox_depth, "overruns": overruns}
    facts.update({k: v for k, v in optional.items() if v is not None})
    facts.update(clock_facts())
    if releases_root is not None:  # "" once an update holds: a status replaces only what it says
        back = rolled_back(releases_root)
        facts["update_rolled_back"] = back["version"] if back else ""
        if back:
            facts["update_rolled_back_ts"] = float(back["ts"])
    return facts


def write_heartbeat(state_dir: Path, version: str, acked_ts: float | None = None) -> None:
    """Record that this version (this process) just had a message acknowledged by the broker."""
    atomic_write(Path(state_dir) / HEARTBEAT_FILE,
                 json.dumps({"version": version, "acked_ts": acked_ts or time.time(),
                             "pid": os.getpid()}), sync=False)


def note_restart(state_dir: Path, reason: str) -> None:
    """Tell the agent that its next stop is a restart (``reason``: ``wire.RESTART_REASONS``).

    Written by root, read (and removed) by the agent's own user: readable by all, it holds no
    secret. Raises OSError when the folder cannot be written.
    """
    atomic_write(Path(state_dir) / RESTART_FILE, json.dumps({"reason": reason, "ts": time.time()}),
                 mode=0o644, sync=False)


def take_restart_note(state_dir: Path, now: float | None = None) -> str | None:
    """Remove the restart note; return its reason if it is fresh (:data:`RESTART_NOTE_MAX_AGE_S`)."""
    path = Path(state_dir) / RESTART_FILE
    try:
        note = read_json(path)
        path.unlink()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("restart note %s unreadable: %s", path, exc)
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    now = time.time() if now is None else now
    try:
        reason, ts = str(note["reason"]), float(note["ts"])
    except (KeyError, TypeError, ValueError):
        return None
    if reason not in wire.RESTART_REASONS or not 0 <= now - ts <= RESTART_NOTE_MAX_AGE_S:
        log.info("restart note of %s ignored (%.0f s old)", reason, now - ts)
        return None
    return reason


def read_heartbeat(state_dir: Path) -> dict[str, Any]:
    """The last heartbeat, or an empty dict."""
    try:
        return dict(read_json(Path(state_dir) / HEARTBEAT_FILE))
    except (OSError, ValueError):
        return {}


def _alive(pid: object) -> bool:
    """False only for a process known to be gone (a heartbeat without a pid proves nothing)."""
    if not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def broker_open(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """True when the broker's TCP port takes a connection (closed at once, nothing sent): the
    broker is there; False when it is refused or out of reach."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_published(state_dir: Path, since_ts: float, timeout_s: float, version: str | None = None,
                   poll_s: float = 1.0, broker_up: Callable[[], bool] | None = None,
                   settle_s: float = 0.0) -> dict[str, Any]:
    """The first heartbeat acknowledged after ``since_ts`` (of ``version``, if given) within
    ``timeout_s``, or an empty dict: the agent running now reaches the broker and publishes.

    With ``broker_up`` (the broker's port, :func:`broker_open`), watched over the last
    ``settle_s`` seconds of the wait: while it was found closed in that span, the wait goes on
    until ``settle_s`` after (at most ``settle_s`` past ``timeout_s``), so that an agent waiting
    out its reconnection back-off when the broker came back has the time to reach it.
    """
    deadline = time.monotonic() + timeout_s
    down_at: float | None = None
    while True:
        beat = read_heartbeat(state_dir)
        if version in (None, beat.get("version")) and float(beat.get("acked_ts", 0)) >= since_ts:
            return beat
        now = time.monotonic()
        if broker_up is not None and now >= deadline - settle_s and not broker_up():
            if down_at is None:
                log.warning("the broker's port is closed: waiting until %.0f s after it opens "
                            "again (at most %.0f s more)", settle_s, settle_s)
            down_at = time.monotonic()
        end = deadline if down_at is None else min(deadline + settle_s,
                                                   max(deadline, down_at + settle_s))
        if now >= end:
            return {}
        time.sleep(poll_s)


HEALTH_PROGRESS_S = 30.0
"""While a release is watched (:func:`wait_healthy`'s soak, 2 minutes by default), a log line
says how long it has run this often."""


def wait_healthy(state_dir: Path, version: str, since_ts: float, timeout_s: float,
                 soak_s: float, poll_s: float = 1.0, broker_up: Callable[[], bool] | None = None,
                 settle_s: float = 0.0) -> bool:
    """True when ``version``'s agent publishes within ``timeout_s`` (a heartbeat acknowledged
    after ``since_ts``; ``broker_up``, ``settle_s``: :func:`wait_published`), then runs ``soak_s``
    more seconds without a restart: the same process, alive (a release that crashes a minute
    after its first message passed the check)."""
    started = time.monotonic()
    log.info("release %s started: waiting up to %.0f s for a message of its acknowledged by the "
             "broker", version, timeout_s)
    first = wait_published(state_dir, since_ts, timeout_s, version, poll_s, broker_up, settle_s)
    if not first:  # the wait may have gone past timeout_s, the broker's port seen closed
        log.warning("release %s did not publish within %.0f s", version,
                    time.monotonic() - started)
        return False
    published = time.monotonic()
    soak_end = published + soak_s
    log.info("release %s published after %.0f s: watching it run %.0f s without a restart",
             version, published - started, soak_s)
    said = published
    while True:
        if time.monotonic() - said >= HEALTH_PROGRESS_S:
            said = time.monotonic()
            log.info("release %s running for %.0f of %.0f s", version, said - published, soak_s)
        beat = read_heartbeat(state_dir) or first  # (an unreadable file: no news)
        if beat.get("version") != version or beat.get("pid") != first.get("pid") \
                or not _alive(first.get("pid")):
            log.warning("release %s restarted %.0f s after it first published",
                        version, time.monotonic() - published)
            return False
        if time.monotonic() >= soak_end:
            return True
        time.sleep(poll_s)


__all__ = ["broker_open", "cert_days_left", "clock_facts", "cpu_temp_c", "health_facts",
           "read_heartbeat", "throttled", "wait_healthy", "wait_published", "write_heartbeat"]

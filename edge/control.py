"""The box's local control socket: the private-mode button and a softphone/CTI connector.

A Unix datagram socket (default ``/run/miroir/control``); one datagram is one command, in plain
text, the same set as the ``cmd`` topic's local ones:

    private on | private off | private toggle
    call idle | call active | call hold
    identify

The agent answers each datagram whose sender has an address (a client socket bound to a path,
or to an autobound abstract one, ``bind("")``) with ``ok <command>`` or ``refused: <why>``, without
waiting: a sender gone or not reading loses its answer. The agent's main loop drains it without
blocking (no thread). The socket file is mode 0660 and
belongs to ``control_group`` when that group exists (the image makes ``miroir-control`` for the
front panel), 0600 otherwise. The agent also writes ``panel.json`` beside it (online, private,
identifying) for the status LED: no audio, no metric, readable by the panel.
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import socket
import stat
from pathlib import Path
from typing import Any

from miroir import wire
from miroir.files import atomic_write

log = logging.getLogger(__name__)

MAX_DATAGRAM = 256
"""Longer datagrams are refused (a command is a few words)."""
MAX_ANSWER = 512
"""Longest answer sent back, in bytes."""
PANEL_FILE = "panel.json"
USAGE = f"'private on|off|toggle', 'call {'|'.join(wire.CALL_STATES)}' or 'identify'"
"""The documented local commands, as the refusals name them."""


class ControlError(ValueError):
    """A local command that is not one of the documented ones, or a control socket path that
    holds something else than a socket."""


def parse(text: str, private_now: bool) -> dict[str, Any]:
    """Turn one local command into a ``cmd``-style mapping (``action`` and ``call_state``).

    Args:
        text: The datagram's text, e.g. ``"private toggle"`` or ``"call hold"``.
        private_now: Whether the box is private now (for ``toggle``).

    Raises:
        ControlError: the text is not a documented command (the message says which ones are).
    """
    if len(text.encode("utf-8", errors="surrogateescape")) > MAX_DATAGRAM:
        raise ControlError(f"local command of over {MAX_DATAGRAM} bytes refused: send one command "
                           f"per datagram, {USAGE}")
    words = text.strip().lower().split()
    if words == ["identify"]:
        return {"action": "identify"}
    if len(words) == 2 and words[0] == "private" and words[1] in ("on", "off", "toggle"):
        on = (not private_now) if words[1] == "toggle" else words[1] == "on"
        return {"action": "private_on" if on else "private_off"}
    if len(words) == 2 and words[0] == "call" and words[1] in wire.CALL_STATES:
        return {"action": "call_state", "call_state": words[1]}
    raise ControlError(f"unknown local command {text.strip()[:40]!r}: use {USAGE}")


def listened_on(path: Path) -> bool:
    """True if a live process has a socket bound at ``path`` (a connect to it succeeds); False
    for a socket file no one holds (a stopped or killed agent's: refused) or one this process
    may not write to."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class ControlSocket:
    """A non-blocking Unix datagram socket bound at ``path``; :meth:`take` drains it.

    Args:
        path: Where to bind (an old socket file there is replaced; one another agent still
            listens on is not).
        group: Group allowed to send (mode 0660), if it exists; else mode 0600.

    Raises:
        ControlError: something else than a socket is at ``path`` (kept: a typo in the settings
            must not delete the file it names), or a socket another agent listens on (kept: an
            agent run by hand beside the service, its state elsewhere, took the service's over,
            and its stop then removed it).
        OSError: the socket cannot be made there.
    """

    def __init__(self, path: Path, group: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():  # systemd makes it (RuntimeDirectory=) on a box
            self.path.parent.mkdir(parents=True)
        try:  # an old socket (the agent's last run) is replaced; anything else stays
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise ControlError(f"control_socket {self.path} is not a socket: left as it is "
                                   "(set control_socket to a free path, e.g. /run/miroir/control)")
            if listened_on(self.path):
                raise ControlError(f"control_socket {self.path}: another agent listens on it: "
                                   "left to it (stop that agent first, or set another "
                                   "control_socket)")
            self.path.unlink()
        except FileNotFoundError:
            pass
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._sock.bind(str(self.path))
        bound = self.path.lstat()
        self._bound = (bound.st_dev, bound.st_ino)
        """The socket file this agent bound: close removes it, never one bound there since."""
        mode = 0o600
        if group:
            try:
                gid = grp.getgrnam(group).gr_gid
                # the unit runs with Group=<group> (its seccomp filter forbids chown): already ours
                if self.path.stat().st_gid != gid:
                    os.chown(self.path, -1, gid)
                mode = 0o660
            except (KeyError, PermissionError) as exc:
                log.warning("control socket %s: group %s not usable (%s), owner only",
                            self.path, group, exc)
        os.chmod(self.path, mode)
        self.panel_errors = 0
        """Failed writes of the panel's state file (logged once; the agent goes on)."""

    def take(self) -> list[tuple[str, Any]]:
        """Every datagram waiting now with its sender's address (None for an unbound sender),
        decoded byte for byte (``surrogateescape``: undecodable bytes kept as such); one over
        :data:`MAX_DATAGRAM` bytes comes cut at one byte more, for :func:`parse` to refuse as too
        long."""
        out: list[tuple[str, Any]] = []
        while True:
            try:
                data, sender = self._sock.recvfrom(MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                return out
            out.append((data.decode("utf-8", errors="surrogateescape"), sender or None))

    def answer(self, sender: Any, text: str) -> bool:
        """Send ``text`` back to ``sender`` without waiting; return False if it could not go (the
        sender is gone, is not reading, or may not be written to: its loss, never the agent's)."""
        if sender is None:
            return False
        data = text.encode("utf-8", errors="backslashreplace")[:MAX_ANSWER]
        try:
            self._sock.sendto(data, sender)
        except OSError as exc:
            log.debug("no answer to %r: %s", sender, exc)
            return False
        return True

    def write_panel(self, **state: bool) -> None:
        """Write the front panel's view (booleans only) next to the socket, atomically.

        A failure (the directory went away or changed hands) is counted and logged once: the
        LED then shows "offline", the agent's metrics go on.
        """
        path = self.path.with_name(PANEL_FILE)
        try:
            atomic_write(path, json.dumps(state), mode=0o644, sync=False)  # the panel reads it
        except OSError as exc:
            self.panel_errors += 1
            if self.panel_errors == 1:
                log.error("cannot write the panel's state %s: %s", path, exc)

    def close(self) -> None:
        """Close, and remove the socket file if it is still the one bound here (a second agent
        on the same path since, a stray one, keeps its own)."""
        self._sock.close()
        try:
            now = self.path.lstat()
        except OSError:
            return
        if (now.st_dev, now.st_ino) != self._bound:
            log.warning("control socket %s: another process bound it since; left to it", self.path)
            return
        with contextlib.suppress(OSError):
            self.path.unlink()

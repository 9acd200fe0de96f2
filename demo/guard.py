"""The demo floor's guard: stops the demo's processes if the demo itself dies without stopping them.

Run by path (``python demo/guard.py``, standard library only) by :mod:`demo.floor`, which writes one
line per process it starts on the guard's stdin, ``<phase> <pid>``, ``remove <folder>`` for the
temporary folder of its site files, and ``done`` once it has stopped them and removed it itself.
Killed with SIGKILL (from another terminal, by the OOM killer), the demo cannot stop anything: its
end of the pipe closes, the guard reads end-of-file without ``done`` and sends SIGTERM to the
processes of phase 0 (the boxes, whose outboxes drain), then of phase 1 (the dashboard and the
broker), SIGKILL to any still running after ``STOP_S`` seconds, then removes the folder (it holds
the site's CA key and the admin password).

A parent-death signal (``prctl(PR_SET_PDEATHSIG)``) would not do for the broker: started as root,
Mosquitto drops to its own user, and that change of credentials clears the signal.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time

STOP_S = 15.0
"""Seconds each phase is given to stop after SIGTERM, as the demo's own stop gives them."""


def _state(pid: int) -> tuple[str, str] | None:
    """``pid``'s state letter and start time (clock ticks after boot), None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    return fields[0], fields[19]


def _running(pid: int, started: str) -> bool:
    """Whether ``pid`` is still the process that started at ``started`` (its number is not reused
    by another) and runs (not a zombie left for its new parent to reap)."""
    state = _state(pid)
    return state is not None and state[1] == started and state[0] != "Z"


def _stop(procs: dict[int, str]) -> None:
    """SIGTERM to each of ``procs`` (pid -> start time), SIGKILL to those still running
    ``STOP_S`` seconds later."""
    for pid, started in procs.items():
        if _running(pid, started):
            with contextlib.suppress(ProcessLookupError):  # ended in between
                os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_S
    while any(_running(*proc) for proc in procs.items()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid, started in procs.items():
        if _running(pid, started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def main() -> int:
    """Read the demo's processes until ``done``; at end-of-file without it, stop them and remove
    the demo's folder."""
    for sig in (signal.SIGINT, signal.SIGHUP):  # the demo's terminal's, not the guard's to obey
        signal.signal(sig, signal.SIG_IGN)
    phases: dict[int, dict[int, str]] = {}
    folder = None
    for line in sys.stdin:
        word, _, rest = line.rstrip("\n").partition(" ")
        if word == "done":
            return 0
        if word == "remove":
            folder = rest
            continue
        pid = int(rest)
        state = _state(pid)
        if state is not None:  # else gone already
            phases.setdefault(int(word), {})[pid] = state[1]
    for phase in sorted(phases):
        _stop(phases[phase])
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

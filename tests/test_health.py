"""Box health facts as the box's sandboxed service reads them: the clock's sync state where the
service may not call ``adjtimex`` (a real process under strace's fault injection, as
``ProtectClock=yes`` denies it), the Pi's throttling flags from sysfs, and the start timeout
extended while a new box waits for NTP (a real ``miroir edge run`` and a notify socket)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np

from edge import health
from provisioning.broker import free_port

REPO = Path(__file__).resolve().parents[1]
DENIED = ["strace", "-f", "-qq", "-o", os.devnull, "-e", "trace=adjtimex,clock_adjtime",
          "-e", "inject=adjtimex,clock_adjtime:error=EPERM"]
"""Run a command with adjtimex and clock_adjtime failing as the unit's seccomp filter makes them."""


def _facts_denied(timesync_dir: Path) -> dict:
    code = ("import json; from pathlib import Path; from edge.health import clock_facts; "
            f"print(json.dumps(clock_facts(Path({str(timesync_dir)!r}))))")
    out = subprocess.run([*DENIED, sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    return json.loads(out.stdout)


def _run_box(tmp_path: Path, clock_wait_s: float, **env: str) -> subprocess.CompletedProcess[str]:
    """``miroir edge run`` over 1 s of silence, adjtimex denied and no timesyncd: never synced."""
    wav = tmp_path / "call.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(16000, "<i2").tobytes())
    config = tmp_path / "box.toml"
    config.write_text(f'site = "s1"\nbox = "b1"\nstate_dir = "{tmp_path / "state"}"\n'
                      f'broker_port = 9\nclock_wait_s = {clock_wait_s}\n')
    return subprocess.run([*DENIED, sys.executable, "-m", "miroir", "edge", "run", "--config",
                           str(config), "--replay", str(wav), str(wav), "--fast"],
                          env={**os.environ, "PYTHONPATH": str(REPO), **env}, capture_output=True,
                          text=True, timeout=120)


def test_the_clock_state_comes_from_timesyncd_where_adjtimex_is_denied(tmp_path: Path) -> None:
    """The box's unit forbids adjtimex even to read (ProtectClock=yes): the clock never read as
    synchronized, so a new box waited its whole clock_wait_s at every start, and the IT page's
    clock alert could never fire. timesyncd's flag file says it instead."""
    timesync = tmp_path / "timesync"
    assert _facts_denied(tmp_path / "none") == {}  # no timesyncd either: nothing known
    timesync.mkdir()
    assert _facts_denied(timesync) == {"clock_synced": False}
    (timesync / "synchronized").touch()
    assert _facts_denied(timesync) == {"clock_synced": True}
    # allowed (outside the sandbox), the kernel's own answer and its offset
    assert set(health.clock_facts(timesync)) == {"clock_synced", "clock_offset_ms"}


def test_throttling_is_read_from_the_firmware_flags_in_sysfs(tmp_path: Path) -> None:
    """vcgencmd needs /dev/vcio, which the unit's device policy closes: the sysfs file is read."""
    flags = tmp_path / "get_throttled"
    flags.write_text("50005\n")  # under-voltage and throttled now (and since boot)
    assert health.throttled(flags) is True
    flags.write_text("50000\n")  # only since boot: not now
    assert health.throttled(flags) is False


def test_a_new_box_extends_its_start_timeout_while_it_waits_for_ntp(tmp_path: Path) -> None:
    """A new box waits up to clock_wait_s (the image says 120 s) for NTP before it is ready: the
    unit's 60 s start timeout killed it first, at every start, for ever. It asks systemd for the
    wait plus a minute first."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(0.2)
    proc = _run_box(tmp_path, 2.0, NOTIFY_SOCKET=str(tmp_path / "notify"))
    got = []
    with contextlib.suppress(TimeoutError):
        while True:
            got.append(sock.recv(4096).decode())
    sock.close()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert got and got[0].startswith("EXTEND_TIMEOUT_USEC=62000000\n"), got[:3]
    ready = next(i for i, m in enumerate(got) if m.startswith("READY=1"))
    assert ready > 0
    assert "numbering from it anyway" in proc.stderr  # it did wait (adjtimex denied, no timesyncd)


def test_a_box_whose_clock_reads_before_its_baselines_waits_for_ntp(tmp_path: Path) -> None:
    """A Pi boots at its image's time: its clock reads before the baselines it learned yesterday,
    which were refused as learned in the future and learned afresh, since a box with an outbox on
    record never waited for NTP. It now waits (clock_wait_s) for NTP first, and says why."""
    from edge import baselines

    first = _run_box(tmp_path, 0.0)  # the box's earlier life: its outbox is on record
    assert first.returncode == 0, first.stderr[-2000:]
    assert (tmp_path / "state" / "outbox.sqlite").exists()
    state = tmp_path / "state"
    assert baselines.clock_behind(state) is False  # no baselines yet
    baselines.save(state, {"f0_median_hz": 180.0}, None, learned_ts=time.time() + 86400.0)
    assert baselines.clock_behind(state) is True
    late = _run_box(tmp_path, 2.0)
    assert late.returncode == 0, late.stderr[-2000:]
    assert "the clock reads before the agent's baselines were learned: waiting up to 2 s" \
        in late.stderr
    assert "baselines will be learned afresh" in late.stderr
    baselines.save(state, {"f0_median_hz": 180.0}, None, learned_ts=time.time() - 3600.0)
    assert baselines.clock_behind(state) is False
    on_time = _run_box(tmp_path, 2.0)  # a clock past them: no wait (the outbox is on record)
    assert on_time.returncode == 0 and "waiting up to" not in on_time.stderr


def test_the_wait_for_a_stale_clock_ends_when_ntp_sets_it(tmp_path: Path) -> None:
    """With an outbox on record, ``await_clock`` waits only when told the clock is behind, and
    stops at the first poll that finds the clock synchronized."""
    from edge.outbox import await_clock

    outbox = tmp_path / "outbox.sqlite"
    outbox.write_bytes(b"")
    polls: list[float] = []
    answers = iter([False, False, False, True])
    assert await_clock(outbox, 10.0, behind=True, synced=lambda: next(answers),
                       sleep=polls.append) is True
    assert polls == [1.0, 1.0, 1.0]
    assert await_clock(outbox, 10.0, synced=lambda: False, sleep=polls.append) is True
    assert len(polls) == 3  # not behind: no wait
    assert await_clock(outbox, 3.0, behind=True, synced=lambda: False, sleep=polls.append) is False
    assert len(polls) == 6


def test_a_release_silent_past_its_timeout_is_logged_with_the_time_it_was_given(
        tmp_path: Path, caplog) -> None:
    """With the broker's port closed in its last seconds the check waits past ``timeout_s``; the
    warning gave ``timeout_s`` (an update's log said 90 s after a 130 s wait)."""
    closed = health.broker_open("127.0.0.1", free_port())  # nothing listens there: False
    assert health.wait_healthy(tmp_path, "9.9.9", time.time(), timeout_s=1.0, soak_s=0.0,
                               poll_s=0.05, broker_up=lambda: closed, settle_s=2.0) is False
    waited = re.search(r"release 9\.9\.9 did not publish within (\d+) s", caplog.text)
    assert waited and int(waited[1]) >= 3, caplog.text  # 1 s + 2 s settle, more if the test stalled

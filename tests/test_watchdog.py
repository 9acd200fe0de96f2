"""sd_notify watchdog: a fake NOTIFY_SOCKET listener sees READY=1, then WATCHDOG=1 while the loop
runs, and none once the loop stalls (a real child process, its loop blocked on purpose)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path

from edge.watchdog import Notifier

REPO = Path(__file__).resolve().parents[1]
WATCHDOG_S = 0.8
LOOP = """
import sys, time
from edge.watchdog import Notifier
wd = Notifier()
wd.ready("capturing")
stall_at = time.monotonic() + float(sys.argv[1])
while True:
    time.sleep(0.032)              # one audio block
    if time.monotonic() > stall_at:
        time.sleep(3600)           # the loop hangs (a stuck device read, a deadlock...)
    wd.ping()
"""


def listen(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.05)
    return sock


def collect(sock: socket.socket, seconds: float) -> list[tuple[float, str]]:
    """Datagrams received during ``seconds``, with their arrival time."""
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with contextlib.suppress(TimeoutError):
            out.append((time.monotonic(), sock.recv(4096).decode()))
    return out


def test_stalled_loop_stops_watchdog_pings(tmp_path: Path) -> None:
    sock = listen(tmp_path / "notify")
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": str(int(WATCHDOG_S * 1e6)),
           "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    run_s = 2.4
    proc = subprocess.Popen([sys.executable, "-c", LOOP, str(run_s)], env=env)
    try:
        got = collect(sock, run_s + 2.5)
    finally:
        proc.kill()
        proc.wait()
        sock.close()
    msgs = [m for _, m in got]
    assert msgs and msgs[0].startswith("READY=1") and "STATUS=capturing" in msgs[0]
    pings = [t for t, m in got if m == "WATCHDOG=1"]
    start = got[0][0]
    # While the loop runs: pings at least every watchdog period (sent every half period).
    running = [t - start for t in pings if t - start < run_s - 0.1]
    assert len(running) >= int(run_s / WATCHDOG_S), running
    gaps = [b - a for a, b in zip([0.0, *running], running, strict=False)]
    assert max(gaps) < WATCHDOG_S, gaps
    # Once stalled: silence for far longer than the period (systemd would kill it).
    last = pings[-1] - start
    assert last < run_s + WATCHDOG_S, f"pings went on after the stall (last at {last:.2f} s)"
    assert got[-1][0] - start < run_s + WATCHDOG_S


def test_no_socket_means_no_op() -> None:
    wd = Notifier(env={})
    assert not wd.enabled and not wd.ready() and not wd.ping()


def test_ping_rate_and_abstract_address(tmp_path: Path) -> None:
    wd = Notifier(env={"NOTIFY_SOCKET": "@miroir-test", "WATCHDOG_USEC": "10000000"})
    assert wd.address == "\0miroir-test" and wd.watchdog_s == 10.0
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0miroir-test")
    sock.settimeout(1.0)
    try:
        assert wd.ping(now_s=100.0)
        assert not wd.ping(now_s=104.0)          # within half the period
        assert wd.ping(now_s=105.1)
        assert sock.recv(64) == b"WATCHDOG=1" and sock.recv(64) == b"WATCHDOG=1"
    finally:
        sock.close()
        wd.close()
    other_pid = Notifier(env={"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert other_pid.watchdog_s is None

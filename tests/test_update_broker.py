"""Updates while the site's broker is down: the real `miroir edge update`, a real agent (the box's
own Box class, its publisher and heartbeat) restarted on each release, a real Mosquitto stopped
and started by the test. A good release is never rolled back and flagged because of the broker."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.health import read_heartbeat
from edge.update import ROLLED_BACK_FILE, Updater, build_release
from provisioning.broker import Mosquitto, SiteFiles
from tests._fixtures_broker import SITE_ID
from tests._fixtures_transport import wait_for
from tests.test_update import keypair, snapshot

REPO = Path(__file__).resolve().parents[1]
BOX = "box-a"

SYSTEMCTL = """#!/bin/sh
# systemctl restart <unit>, as systemd does it: stop the agent (SIGTERM, and wait), start
# whatever current points to. With {work}/kill-broker present, the broker dies first (once).
echo "$@" >> {work}/restarts
if [ -f {work}/kill-broker ]; then
  kill -TERM "$(cat {work}/kill-broker)"; rm {work}/kill-broker
fi
if [ -f {work}/agent.pid ]; then
  pid=$(cat {work}/agent.pid)
  kill -TERM "$pid" 2>/dev/null
  while [ -e /proc/$pid ] && [ "$(cut -d' ' -f3 /proc/$pid/stat)" != Z ]; do sleep 0.1; done
fi
setsid {root}/current/bin/miroir >> {work}/agent.log 2>&1 &
echo $! > {work}/agent.pid
"""


@dataclass
class Box:
    """A releases root, the agent's state folder and a fake systemctl that (re)starts the agent."""

    work: Path
    site: SiteFiles
    broker: Mosquitto
    priv: bytes

    @property
    def root(self) -> Path:
        """The releases root."""
        return self.work / "root"

    @property
    def state(self) -> Path:
        """The agent's state folder (heartbeat.json)."""
        return self.work / "state" / BOX

    def release(self, version: str, port: int | None = None) -> Path:
        """A signed release whose bin/miroir runs the box's agent reporting ``version``, on the
        broker's port (or ``port``: an agent that never reaches it)."""
        pair = self.site.box(BOX)
        spec = {"site": SITE_ID, "host": "localhost", "port": port or self.broker.port,
                "ca": str(self.site.ca_cert), "state_root": str(self.work / "state"),
                "boxes": [{"id": BOX, "cert": str(pair.cert), "key": str(pair.key)}],
                "rate_hz": 1.0, "keepalive_s": 5, "drain_s": 1.0, "version": version}
        tree = self.work / f"tree-{version}-{port}"
        (tree / "bin").mkdir(parents=True)
        (tree / "spec.json").write_text(json.dumps(spec))
        script = tree / "bin" / "miroir"
        script.write_text(f"#!/bin/sh\ncd {REPO}\nPYTHONPATH={REPO} exec {sys.executable} -m "
                          f'bench.ingest box "$(dirname "$0")/../spec.json"\n')
        script.chmod(0o755)
        return build_release(tree, version, self.priv, self.work / f"miroir-{version}-{port}.release")

    def restart(self) -> None:
        """Restart the agent (a fresh one connects at once: no reconnect backoff to wait out)."""
        subprocess.run([str(self.work / "bin" / "systemctl"), "restart"], check=True, timeout=30)

    def stop_agent(self) -> None:
        """Kill the agent (a running release that crashes at once, over and over)."""
        os.kill(int((self.work / "agent.pid").read_text()), signal.SIGKILL)

    def restarts(self) -> int:
        """How many times systemctl was called."""
        path = self.work / "restarts"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def start_update(self, bundle: Path, *options: str) -> subprocess.Popen[str]:
        """The real `miroir edge update`, started, with this box's systemctl first on the PATH
        and its settings file (the broker's address)."""
        env = {**os.environ, "PYTHONPATH": str(REPO),
               "PATH": f"{self.work / 'bin'}:{os.environ['PATH']}"}
        config = self.work / "box.toml"
        config.write_text(f'site = "{SITE_ID}"\nbox = "{BOX}"\nbroker_host = "localhost"\n'
                          f"broker_port = {self.broker.port}\n")
        return subprocess.Popen(
            [sys.executable, "-m", "miroir", "edge", "update", str(bundle), "--root",
             str(self.root), "--key", str(self.work / "release.pub"), "--state-dir",
             str(self.state), "--config", str(config), "--health-timeout-s", "20",
             "--soak-s", "2", *options],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def update(self, bundle: Path, *options: str) -> subprocess.CompletedProcess[str]:
        """The real `miroir edge update` (:meth:`start_update`), to its end."""
        proc = self.start_update(bundle, *options)
        try:
            out, err = proc.communicate(timeout=180)
        finally:
            proc.kill()
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def publishing(self, version: str, since_ts: float = 0.0) -> None:
        """Wait until the agent of ``version`` had a message acknowledged by the broker (after
        ``since_ts``)."""
        def beat() -> bool:
            hb = read_heartbeat(self.state)
            return hb.get("version") == version and float(hb.get("acked_ts", 0)) >= since_ts

        wait_for(beat, 90, f"a heartbeat of {version}")  # (reconnecting: a backoff up to 30 s)


@pytest.fixture
def box(tmp_path: Path, site: SiteFiles) -> Iterator[Box]:
    """Release 1.0 installed, its agent running and publishing through the site's real broker."""
    priv, pub = keypair()
    (tmp_path / "release.pub").write_bytes(pub)
    (tmp_path / "bin").mkdir()
    b = Box(tmp_path, site, site.broker(), priv)
    b.state.mkdir(parents=True)
    (tmp_path / "bin" / "systemctl").write_text(SYSTEMCTL.format(work=tmp_path, root=b.root))
    (tmp_path / "bin" / "systemctl").chmod(0o755)
    Updater(b.root).install(b.release("1.0"), pub, restart=lambda: None, health=lambda v: True)
    b.broker.start()
    try:
        b.restart()
        b.publishing("1.0")
        yield b
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((tmp_path / "agent.pid").read_text()), signal.SIGKILL)
        b.broker.kill()


def test_an_update_while_the_broker_is_down_changes_nothing_and_says_why(box: Box) -> None:
    """The broker down (maintenance) while IT updates: every box switched to the good release,
    waited 90 s for a message that could not go, rolled it back (exit 4, "failed its health
    check") and flagged it on the IT page. The running release must now show it reaches the
    broker first: it does not, so nothing changes (exit 5); once the broker is back, the same
    release installs. A running agent that is the one failing (the broker up) takes a release
    with --even-if-offline."""
    box.broker.stop()
    bundle = box.release("2.0")
    before, restarts = snapshot(box.root), box.restarts()
    done = box.update(bundle)
    assert done.returncode == 5, done.stderr
    assert "cannot reach the broker" in done.stderr and "nothing changed" in done.stderr, done.stderr
    assert snapshot(box.root) == before and box.restarts() == restarts
    assert not (box.root / ROLLED_BACK_FILE).exists()
    back_ts = time.time()
    box.broker.start()
    box.restart()
    box.publishing("1.0", back_ts)
    done = box.update(bundle)
    assert done.returncode == 0, done.stderr
    assert Updater(box.root).current_version() == "2.0"

    box.stop_agent()
    done = box.update(box.release("2.1"), "--even-if-offline")
    assert done.returncode == 0, done.stderr
    assert Updater(box.root).current_version() == "2.1"


def test_the_broker_lost_during_the_check_is_not_taken_for_a_bad_release(box: Box) -> None:
    """The broker goes away right as the agent restarts on the new release: the release is put
    back, as before, yet reported as not checked (exit 5, no rolled-back flag for the IT page)
    rather than as failing its check; a release that cannot reach a broker that is there is
    still rolled back and flagged (exit 4)."""
    assert box.broker.pid is not None
    (box.work / "kill-broker").write_text(str(box.broker.pid))
    done = box.update(box.release("2.0"))
    assert done.returncode == 5, done.stderr
    assert "could not be checked" in done.stderr and "rolled back to 1.0" in done.stderr
    assert "failed its health check" not in done.stderr, done.stderr
    assert Updater(box.root).current_version() == "1.0"
    assert not (box.root / ROLLED_BACK_FILE).exists()

    back_ts = time.time()
    box.broker.start()
    box.restart()
    box.publishing("1.0", back_ts)
    unreachable = box.broker.port + 1  # an agent configured for a port nothing listens on
    done = box.update(box.release("2.1", port=unreachable))
    assert done.returncode == 4 and "failed its health check" in done.stderr, done.stderr
    assert Updater(box.root).current_version() == "1.0"
    assert json.loads((box.root / ROLLED_BACK_FILE).read_text())["version"] == "2.1"


def _attempts_until_backoff_of(port: int, gap_s: float, within_s: float) -> list[float]:
    """Stand in for the broker on ``port`` (accept, then reset: a broker that is not there) and
    return the times of the agent's connection attempts, up to the first one that came ``gap_s``
    or more after the one before (its back-off grown that long)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(8)
    listener.settimeout(1.0)
    seen: list[float] = []
    deadline = time.monotonic() + within_s
    try:
        while len(seen) < 2 or seen[-1] - seen[-2] < gap_s:
            assert time.monotonic() < deadline, f"agent's attempts: {seen}"
            with contextlib.suppress(TimeoutError):
                conn, _ = listener.accept()
                seen.append(time.monotonic())
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
    finally:
        listener.close()
    return seen


def test_an_update_right_after_a_broker_outage_is_not_refused_for_the_agents_backoff(
        box: Box) -> None:
    """After an outage of a minute the running agent waited 64 s before its next attempt (its
    reconnection back-off doubles 1, 2, 4... s up to 120 s: 120 s after two minutes), longer
    than the update's check that it reaches the broker (45 s here, 90 s on a box): an update
    started as the broker came back said it "cannot reach the broker" (exit 5), though the same
    command a minute later worked. The back-off now stops at 30 s, well within the check."""
    box.broker.stop()
    attempts = _attempts_until_backoff_of(box.broker.port, 25.0, 150.0)
    box.broker.start()
    done = box.update(box.release("2.0"), "--health-timeout-s", "45")
    assert done.returncode == 0, (done.stderr, attempts)
    assert Updater(box.root).current_version() == "2.0"


def test_a_release_that_waits_out_its_backoff_while_the_broker_comes_back_is_kept(
        box: Box) -> None:
    """The broker went away as the agent restarted on the new release and came back 35 s into
    its 40 s check (90 s on a box): the new agent, backing off (attempts 1, 3, 7, 15, 31, 61 s
    after its start), was still waiting when the check ended; the release was rolled back, and as
    the release put back reached the broker at once, flagged on the IT page as failed (exit 4),
    though it was good. The check now watches the broker's port itself: seen closed, the release
    gets the agent's longest back-off and a margin after its return (at most that much more)."""
    assert box.broker.pid is not None
    (box.work / "kill-broker").write_text(str(box.broker.pid))
    restarts = box.restarts()
    proc = box.start_update(box.release("2.0"), "--health-timeout-s", "40")
    wait_for(lambda: box.restarts() > restarts, 60, "the switch to release 2.0")
    switched_s = time.monotonic()
    wait_for(lambda: time.monotonic() - switched_s >= 35, 60, "a 35 s outage")
    box.broker.start()
    err = proc.communicate(timeout=180)[1]
    assert proc.returncode == 0, err
    assert Updater(box.root).current_version() == "2.0"
    assert not (box.root / ROLLED_BACK_FILE).exists()

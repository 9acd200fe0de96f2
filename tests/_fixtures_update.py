"""The update tests' box: a releases root, a real agent restarted by a fake systemctl on each
release, and a real Mosquitto the tests stop and start (``tests/test_update_broker.py``,
``tests/test_update_backoff.py``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.health import read_heartbeat
from edge.update import Updater, build_release
from provisioning.broker import Mosquitto, SiteFiles
from tests._fixtures_broker import SITE_ID
from tests._fixtures_transport import wait_for
from tests.test_update import keypair

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

    def start_update(self, bundle: Path, *options: str,
                     nohup: bool = False) -> subprocess.Popen[str]:
        """The real `miroir edge update`, started, with this box's systemctl first on the PATH
        and its settings file (the broker's address); ``nohup``: with SIGHUP ignored, as
        ``nohup`` starts a command."""
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
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=(lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if nohup else None)

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



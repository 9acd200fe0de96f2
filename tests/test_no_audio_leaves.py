"""Audio stays in memory: a whole call through the box, watched by strace.

The box process runs a two-party call with its state directory and temporary directory pointed at
fresh folders. strace records every file it opens for writing and every network connection:
nothing is written outside those two folders, what is written inside holds no samples (only the
settings and the outbox of contract messages), and the only connection is to the broker.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from miroir import wire
from tests._fixtures_broker import SITE_ID

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")


def test_box_writes_no_audio_and_talks_only_to_its_broker(site, broker, tmp_path: Path) -> None:
    state = tmp_path / "state"
    tmp = tmp_path / "tmp"
    state.mkdir()
    tmp.mkdir()
    cert = site.box("box-a")
    config = state / "box.toml"
    config.write_text(
        f'site = "{SITE_ID}"\nbox = "box-a"\nbroker_host = "127.0.0.1"\nbroker_port = {broker.port}\n'
        f'ca_file = "{site.ca_cert}"\ncert_file = "{cert.cert}"\nkey_file = "{cert.key}"\n'
        f'state_dir = "{state}"\n')
    trace = tmp_path / "strace.log"
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=open,openat,creat,rename,renameat,renameat2,link,"
         "mkdir,mkdirat,connect,getsockname", "-o", str(trace),
         sys.executable, "-m", "miroir", "edge", "run", "--config", str(config), "--fast",
         "--replay", str(SHARED / "ami-headsets" / "source0.wav"),
         str(SHARED / "ami-headsets" / "source1.wav")],
        env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = trace.read_text()

    written = set()
    for line in log.splitlines():
        m = re.search(r'(open|openat|creat)\(.*?"([^"]+)", ([A-Z_|]+)', line)
        if m and (m.group(1) == "creat" or any(flag in m.group(3) for flag in WRITE_FLAGS)):
            written.add(m.group(2))
        m = re.search(r'(rename\w*|link|mkdir\w*)\(.*?"([^"]+)"', line)
        if m:
            written.add(m.group(2))
    allowed = (str(state) + "/", str(tmp) + "/", "/dev/null", "/dev/tty", "/dev/pts/", "/dev/shm/")
    outside = sorted(p for p in written
                     if not p.startswith(allowed) and p not in (str(state), str(tmp)))
    assert not outside, f"the box wrote outside its state and temporary folders: {outside}"
    assert any(p.startswith(str(state)) for p in written), "strace saw no write at all"

    # Inside: only the settings and the outbox, whose rows are contract messages (and the lock
    # the agent holds on its state directory, which holds its pid).
    files = {p.name for p in state.iterdir()} | {p.name for p in tmp.rglob("*")}
    assert files <= {"box.toml", "outbox.sqlite", "outbox.sqlite-wal", "outbox.sqlite-shm",
                     "outbox.seq", "heartbeat.json", "agent.lock"}, files
    assert (state / "agent.lock").read_text().strip().isdigit()
    assert (state / "outbox.seq").read_text().strip().isdigit()  # one number: reserved seqs
    with sqlite3.connect(state / "outbox.sqlite") as db:
        rows = db.execute("SELECT kind, payload FROM outbox").fetchall()
    assert len(rows) >= 60  # one minute of metrics at least
    for kind, payload in rows:
        wire.decode(kind, payload)  # allow-listed scalars only: no array of samples can pass
        assert len(payload) < 2048  # scalars only: a second of samples would be 32 KB

    # Egress: every IP connection goes to the broker, except to a loopback socket the process
    # bound itself (paho's wake-up socket pair).
    addr = r"\{sa_family=AF_INET6?, sin6?_port=htons\((\d+)\), [^}]*?\"([0-9a-f.:]+)\""
    own = {int(port) for port, _ in re.findall(r"getsockname\(\d+, " + addr, log)}
    peers = [(int(port), ip) for port, ip in re.findall(r"connect\(\d+, " + addr, log)]
    assert (broker.port, "127.0.0.1") in peers, f"no connection to the broker: {peers}"
    for port, ip in peers:
        assert port == broker.port or (port in own and ip in ("127.0.0.1", "::1")), (port, ip)

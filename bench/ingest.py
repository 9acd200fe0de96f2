"""Ingest benchmark and simulated boxes: many real box clients through a real Mosquitto.

Every simulated box is the real box code path, :class:`edge.box.Box` with its SQLite
:class:`edge.outbox.Outbox` and :class:`edge.publisher.Publisher` (its own MQTT v5 client and its
own TLS certificate); only the audio pipeline is replaced by :class:`SyntheticPipeline`, which
emits wire-valid metrics. A *fleet* process drives hundreds of boxes from one ``epoll`` loop
(:class:`edge.publisher.SharedLoop`); a *box* process runs one box with paho's own thread, as
``miroir edge run`` does. In the benchmark (not in the transport tests, which kill and restart
boxes) the simulated boxes keep their outboxes in memory (``outbox_in_memory``): on a floor each
box writes its own SD card, and 2000 of them sharing this machine's disk and two cores would
measure the simulator, not the dashboard.

Child processes are started as ``python -m bench.ingest {fleet,box,dashboard} SPEC.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from miroir import wire

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
BENCH_SITE = "bench"
CACHE_DIR = Path(tempfile.gettempdir()) / "miroir-bench-pki"
"""Provisioned benchmark site (CA and box certificates), reused across runs."""
BOXES_PER_PROCESS = 500
DRAIN_S = 30.0
"""After the measured stretch, how long the boxes keep sending what they still hold."""


# --------------------------------------------------------------------------- synthetic boxes
@dataclass
class Message:
    """One message for the outbox."""

    kind: str
    body: dict[str, Any]


class SyntheticPipeline:
    """Stands in for the audio pipeline: one wire-valid metrics message per call."""

    STATES = ("silence", "agent", "prospect", "overlap")

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, block: Any) -> list[Message]:
        """Return the next metrics message (``block`` is ignored)."""
        self.n += 1
        i = self.n
        return [Message("metrics", {
            "t_start": float(i - 1), "window_s": 1.0,
            "near_speech_ratio": (i % 10) / 10, "far_speech_ratio": (i % 7) / 7,
            "near_talking": i % 2 == 0, "far_talking": i % 3 == 0,
            "talk_state": self.STATES[i % 4]})]

    def reset(self) -> None:
        """Start counting again."""
        self.n = 0


def _settings(spec: dict[str, Any], box: dict[str, str]) -> Any:
    from edge.settings import EdgeSettings

    return EdgeSettings(site=spec["site"], box=box["id"], broker_host=spec["host"],
                        broker_port=int(spec["port"]), ca_file=Path(spec["ca"]),
                        cert_file=Path(box["cert"]), key_file=Path(box["key"]),
                        state_dir=Path(spec["state_root"]) / box["id"],
                        keepalive_s=int(spec.get("keepalive_s", 30)))


class LeanBox:
    """A light simulated box for the ingest benchmark: the real publisher (its own MQTT v5 client
    and TLS certificate, QoS 1, the shared loop), wire-valid numbered messages, and a queue in
    RAM instead of the outbox, status and heartbeat. It measures the broker and the dashboard,
    not the simulator (the real box path is :func:`_make_box` without ``lean``)."""

    def __init__(self, settings: Any) -> None:
        from edge.publisher import Publisher

        self.settings = settings
        self.publisher = Publisher(settings, version="sim")
        self.pipeline = SyntheticPipeline()
        self.outbox = self  # run_fleet reads origin, last_seq, dropped and depth() from it
        self.origin = 1  # numbers live in RAM and die with the process, as the dashboard's test db
        self.last_seq = 0
        self.dropped = 0
        self.resent = 0
        self._pending: deque[tuple[int, str, bytes]] = deque()

    def submit(self, messages: list[Message]) -> None:
        """Number and encode messages (validated against the wire), queue them."""
        s = self.settings
        for m in messages:
            self.last_seq += 1
            body = {"v": wire.SCHEMA_VERSION, "site": s.site, "box": s.box,
                    "ts": round(time.time(), 3), "seq": self.last_seq, **m.body}
            self._pending.append((self.last_seq, m.kind, wire.encode(m.kind, body)))

    def pump(self) -> None:
        """Forget acknowledged messages, send queued ones while the window allows."""
        self.publisher.take_acked()
        while self._pending and self.publisher.send(*self._pending[0]):
            self._pending.popleft()

    def depth(self) -> int:
        """Messages queued or in flight."""
        return len(self._pending) + len(self.publisher.in_flight())

    def close(self) -> None:
        """Nothing to close (run_fleet closes outboxes)."""


def _make_box(spec: dict[str, Any], entry: dict[str, str]) -> Any:
    from edge.box import Box
    from edge.outbox import DEFAULT_MAX_BYTES, Outbox

    settings = _settings(spec, entry)
    if spec.get("lean"):
        return LeanBox(settings)
    settings.state_dir.mkdir(parents=True, exist_ok=True)  # the heartbeat file goes there
    path = ":memory:" if spec.get("outbox_in_memory") else settings.state_dir / "outbox.sqlite"
    outbox = Outbox(path, settings.site, settings.box,
                    max_bytes=int(spec.get("max_bytes", DEFAULT_MAX_BYTES)))
    return Box(settings, version="sim", pipeline=SyntheticPipeline(), outbox=outbox)


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_fleet(spec: dict[str, Any]) -> dict[str, Any]:
    """Run many boxes from one loop until SIGTERM or ``duration_s``; return their counters.

    Each box emits one message every ``1 / rate_hz`` seconds (phases spread evenly), once every
    box has tried its first connection. On SIGTERM the boxes stop emitting and drain their
    outboxes for up to ``drain_s`` seconds.
    """
    from edge.publisher import SharedLoop

    _raise_nofile()
    stop = {"flag": False, "quiet": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("flag", True))
    signal.signal(signal.SIGUSR1, lambda *_: stop.__setitem__("quiet", True))
    loop = SharedLoop()
    boxes = [_make_box(spec, entry) for entry in spec["boxes"]]
    dirty: set[int] = set()
    for i, box in enumerate(boxes):
        box.publisher.activity = lambda pub, i=i: dirty.add(i)
        loop.add(box.publisher)
    deadline = time.monotonic() + float(spec.get("connect_timeout_s", 120))
    while time.monotonic() < deadline and not stop["flag"]:
        loop.run_once(0.01)
        if all(b.publisher.connected.is_set() for b in boxes) or not spec.get("wait_connected",
                                                                              True):
            break
    ready = spec.get("ready_file")
    if ready:
        Path(ready).write_text(str(sum(b.publisher.connected.is_set() for b in boxes)))
    period_s = 1.0 / float(spec.get("rate_hz", 1.0))
    start = time.monotonic()
    cpu_start = time.process_time()
    n = len(boxes)
    next_at = [start + period_s * i / n for i in range(n)]
    duration_s = float(spec.get("duration_s", 0)) or float("inf")
    last_sweep = 0.0
    order = sorted(range(n), key=lambda i: next_at[i])
    k = 0
    while not (stop["flag"] or stop["quiet"]) and time.monotonic() - start < duration_s:
        loop.run_once(0.005)
        now = time.monotonic()
        # boxes are due in a fixed round-robin order
        while next_at[order[k]] <= now:
            i = order[k]
            boxes[i].submit(boxes[i].pipeline(None))
            dirty.add(i)
            next_at[i] += period_s
            k = (k + 1) % n
        if now - last_sweep > 1.0:
            last_sweep = now
            dirty.update(range(n))
        while dirty:
            boxes[dirty.pop()].pump()
    emit = {"cpu_s": time.process_time() - cpu_start, "wall_s": time.monotonic() - start}
    result = spec.get("result_file")
    if stop["quiet"] and result:
        # Quiet: stop emitting, say what was emitted, keep serving (resends) until SIGTERM.
        Path(result).with_suffix(".quiet").write_text(
            json.dumps({b.settings.box: [b.outbox.origin, b.outbox.last_seq] for b in boxes}))
        last_sweep = 0.0
        while not stop["flag"]:
            loop.run_once(0.01)
            now = time.monotonic()
            if now - last_sweep > 0.5:
                last_sweep = now
                dirty.update(range(n))
            while dirty:
                boxes[dirty.pop()].pump()
    drain_end = time.monotonic() + float(spec.get("drain_s", DRAIN_S))
    last_sweep = 0.0
    while time.monotonic() < drain_end:
        loop.run_once(0.01)
        now = time.monotonic()
        if now - last_sweep > 0.5:
            last_sweep = now
            dirty.update(range(n))
            if all(b.outbox.depth() == 0 for b in boxes):
                break
        while dirty:
            boxes[dirty.pop()].pump()
    out = {b.settings.box: {"origin": b.outbox.origin, "last_seq": b.outbox.last_seq,
                            "dropped": b.outbox.dropped,
                            "depth": b.outbox.depth(), "resent": b.resent,
                            "connects": b.publisher.connects} for b in boxes}
    loop.close()
    for b in boxes:
        b.outbox.close()
    if result:
        Path(result).with_suffix(".cpu").write_text(json.dumps(emit))
        Path(result).write_text(json.dumps(out))
    return out


def _paced(rate_hz: float) -> Iterator[int]:
    """Blocks for :class:`_GatedPipeline`: one tick per period, pump-only blocks between."""
    period_s = 1.0 / rate_hz
    t = time.monotonic()
    i = 0
    while True:
        t += period_s
        while time.monotonic() < t:
            yield -1  # a pump-only block (see _GatedPipeline)
            time.sleep(0.02)
        yield i
        i += 1


class _GatedPipeline(SyntheticPipeline):
    """Emits a message for a real tick (block >= 0), nothing for a pump-only block or once
    quiet (SIGUSR1); on going quiet, writes the first and the last seq to ``quiet_file``."""

    def __init__(self, box: Any = None, quiet_file: Path | None = None) -> None:
        super().__init__()
        self.box = box
        self.quiet_file = quiet_file
        self.quiet = False
        self._said = False

    def __call__(self, block: Any) -> list[Message]:
        if self.quiet:
            if not self._said and self.quiet_file is not None and self.box is not None:
                self._said = True
                tmp = self.quiet_file.with_suffix(".tmp")
                tmp.write_text(f"{self.box.outbox.origin} {self.box.outbox.last_seq}")
                tmp.rename(self.quiet_file)
            return []
        return [] if block < 0 else super().__call__(block)


def run_box(spec: dict[str, Any]) -> None:
    """Run one box with paho's own network thread, like ``miroir edge run``, until SIGTERM."""
    from edge.box import Box

    settings = _settings(spec, spec["boxes"][0])
    pipe = _GatedPipeline(quiet_file=settings.state_dir / "quiet")
    box = Box(settings, version=str(spec.get("version", "sim")), pipeline=pipe)
    pipe.box = box
    pipe.n = box.outbox.last_seq - box.outbox.origin + 1  # messages made before a restart
    box.install_signal_handlers()
    signal.signal(signal.SIGUSR1, lambda *_: setattr(pipe, "quiet", True))
    for _ in range(int(spec.get("backlog", 0))):  # stored before connecting: a replay
        box.submit(pipe(0))
    box.run(_paced(float(spec.get("rate_hz", 1.0))), drain_s=float(spec.get("drain_s", 5.0)))


def run_dashboard(spec: dict[str, Any]) -> None:
    """Run the dashboard's ingest until SIGTERM, then write its stats to ``result_file``."""
    from dashboard.ingest import Ingest
    from dashboard.settings import DashboardSettings

    settings = DashboardSettings(site=spec["site"], db_path=Path(spec["db"]),
                                 mqtt_host=spec["host"], mqtt_port=int(spec["port"]),
                                 mqtt_ca=Path(spec["ca"]), mqtt_cert=Path(spec["cert"]),
                                 mqtt_key=Path(spec["key"]))
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("flag", True))
    ingest = Ingest(settings)
    ingest.start()
    if not ingest.wait_connected(30):
        raise SystemExit("dashboard ingest could not connect")
    Path(spec["ready_file"]).write_text("1")
    while not stop["flag"]:
        time.sleep(0.1)
    stats = ingest.stats()
    ingest.close()
    Path(spec["result_file"]).write_text(json.dumps(stats))


def child(kind: str, spec: dict[str, Any], spec_path: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m bench.ingest <kind> spec_path`` after writing ``spec`` there."""
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "bench.ingest", kind, str(spec_path)],
                            cwd=REPO, env=env, stdin=subprocess.DEVNULL)


def wait_file(path: Path, timeout_s: float, procs: Sequence[subprocess.Popen[bytes]] = ()) -> str:
    """Wait until ``path`` exists and return its text; raise if a process died or time ran out."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"child {p.args!r} exited with {p.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear in {timeout_s} s")
        time.sleep(0.05)
    time.sleep(0.05)
    return path.read_text()


# ------------------------------------------------------------------------------- provisioning
def _issue_many(args: tuple[str, str, str, list[str]]) -> list[str]:
    from provisioning import pki

    ca_cert, ca_key, root, ids = args
    ca = pki.CertPair(Path(ca_cert), Path(ca_key))
    for box_id in ids:
        pki.issue(ca, Path(root) / box_id, box_id)
    return ids


def provision(site_dir: Path, site: str, n: int, *, prefix: str = "sim") -> Any:
    """Provision (or reuse) ``site_dir`` with ``n`` boxes ``<prefix>-00001``...; return SiteFiles.

    Box certificates are made in a process pool and kept: a second run with the same
    ``site_dir`` only picks a new port and rewrites the broker config.
    """
    from provisioning import pki
    from provisioning.broker import free_port, make_site, write_acl, write_config

    ids = [f"{prefix}-{i:05d}" for i in range(1, n + 1)]
    marker = site_dir / "site.json"
    if marker.exists() and json.loads(marker.read_text()).get("site") == site:
        from provisioning.broker import SiteFiles

        ca = pki.CertPair(site_dir / "ca" / pki.CERT_FILE, site_dir / "ca" / pki.KEY_FILE)
        server = pki.CertPair(site_dir / "broker" / pki.CERT_FILE,
                              site_dir / "broker" / pki.KEY_FILE)
        dash = pki.CertPair(site_dir / "dashboard" / pki.CERT_FILE,
                            site_dir / "dashboard" / pki.KEY_FILE)
        port = free_port()
        # A fresh broker state: no session or queue left over from an earlier run.
        (site_dir / "persist" / "mosquitto.db").unlink(missing_ok=True)
        acl = write_acl(site_dir / "acl", site)
        config = write_config(site_dir, port=port, ca=ca, server=server, acl=acl)
        files = SiteFiles(dir=site_dir, site=site, port=port, ca=ca, server=server,
                          dashboard=dash, acl=acl, config=config, log=site_dir / "mosquitto.log")
    else:
        shutil.rmtree(site_dir, ignore_errors=True)
        site_dir.mkdir(parents=True)
        site_dir.chmod(0o755)
        files = make_site(site_dir, site, [])
        marker.write_text(json.dumps({"site": site}))
    root = site_dir / "boxes"
    todo = [b for b in ids if not (root / b / pki.CERT_FILE).exists()]
    if todo:
        chunks = [todo[i::8] for i in range(8)]
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            list(pool.map(_issue_many, [(str(files.ca.cert), str(files.ca.key), str(root), c)
                                        for c in chunks if c]))
    for b in ids:
        files.boxes[b] = pki.CertPair(root / b / pki.CERT_FILE, root / b / pki.KEY_FILE)
    return files


def fleet_specs(files: Any, box_ids: Sequence[str], work: Path, *, per_process: int,
                **extra: Any) -> list[dict[str, Any]]:
    """Split boxes into fleet specs of at most ``per_process`` boxes each."""
    specs = []
    for j in range(0, len(box_ids), per_process):
        ids = box_ids[j:j + per_process]
        k = j // per_process
        specs.append({"site": files.site, "host": "localhost", "port": files.port,
                      "ca": str(files.ca_cert), "state_root": str(work / "state"),
                      "boxes": [{"id": b, "cert": str(files.boxes[b].cert),
                                 "key": str(files.boxes[b].key)} for b in ids],
                      "ready_file": str(work / f"fleet{k}.ready"),
                      "result_file": str(work / f"fleet{k}.json"), **extra})
    return specs


# --------------------------------------------------------------------------------- benchmark
def _ram_dir(work: Path) -> Path:
    """Where the simulated boxes' state (heartbeat files) goes: RAM if the system has it."""
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix="miroir-bench-", dir=shm)) if shm.is_dir() else work


def _cpu_s(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def _pct(values: list[float], q: float) -> float | None:
    from dashboard.ingest import percentile

    return percentile(values, q)


def bench_ingest(boxes: int = 2000, duration_s: float = 60.0, rate_hz: float = 1.0,
                 per_process: int = BOXES_PER_PROCESS, site_dir: Path = CACHE_DIR,
                 sim: str = "lean") -> dict[str, Any]:
    """Run the ingest benchmark and return its figures.

    Args:
        boxes: Simulated boxes, each its own MQTT client and TLS certificate.
        duration_s: Length of the measured window, in seconds.
        rate_hz: Messages per second per box.
        per_process: Boxes per generator process.
        site_dir: Where the benchmark site's PKI is kept between runs.
        sim: ``lean`` (:class:`LeanBox`) or ``box`` (the real box path, outbox in memory).

    Returns:
        boxes, msgs_per_s, lost, duplicated, lag_ms_p50, lag_ms_p99, dashboard_cpu_pct,
        generator_cpu_pct, and context.
    """
    import sqlite3

    t0 = time.monotonic()
    log.info("bench ingest: the site's certificates for %d boxes (in %s; the first run issues "
             "them)", boxes, site_dir)
    files = provision(site_dir, BENCH_SITE, boxes)
    provision_s = time.monotonic() - t0
    work = Path(tempfile.mkdtemp(prefix="miroir-bench-ingest-"))
    ram = _ram_dir(work)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with files.broker() as broker:
            dash_spec = {"site": files.site, "host": "localhost", "port": files.port,
                         "ca": str(files.ca_cert), "cert": str(files.dashboard.cert),
                         "key": str(files.dashboard.key), "db": str(work / "dash.sqlite"),
                         "ready_file": str(work / "dash.ready"),
                         "result_file": str(work / "dash.json")}
            dash = child("dashboard", dash_spec, work / "dash-spec.json")
            procs.append(dash)
            wait_file(work / "dash.ready", 60, [dash])
            ids = sorted(files.boxes)[:boxes]
            log.info("bench ingest: broker and dashboard ingest up; %d boxes connecting", boxes)
            specs = fleet_specs(files, ids, work, per_process=per_process, rate_hz=rate_hz,
                                duration_s=duration_s, keepalive_s=60, outbox_in_memory=True,
                                lean=sim == "lean",
                                state_root=str(ram / "state"))
            fleets = [child("fleet", s, work / f"fleet{k}-spec.json")
                      for k, s in enumerate(specs)]
            procs += fleets
            connected = sum(int(wait_file(Path(s["ready_file"]), 300, fleets)) for s in specs)
            log.info("bench ingest: %d boxes connected; measuring for %g s", connected, duration_s)
            start = time.monotonic()
            dash_cpu0 = _cpu_s(dash.pid)
            broker_cpu0 = _cpu_s(broker.pid) if broker.pid else 0.0
            time.sleep(duration_s)
            window_s = time.monotonic() - start
            dash_cpu = _cpu_s(dash.pid) - dash_cpu0
            broker_cpu = (_cpu_s(broker.pid) if broker.pid else 0.0) - broker_cpu0
            log.info("bench ingest: measured; waiting for the boxes' last messages to be stored")
            for p in fleets:
                p.wait(duration_s + DRAIN_S + 120)
            # the fleets are gone: their CPU was sampled on exit via their result timing
            results: dict[str, Any] = {}
            for s in specs:
                results.update(json.loads(wait_file(Path(s["result_file"]), 10)))
            expected = sum(r["last_seq"] - r["origin"] + 1 for r in results.values())
            db = sqlite3.connect(work / "dash.sqlite")
            deadline = time.monotonic() + 60
            got = 0
            while time.monotonic() < deadline:
                got = db.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
                if got >= expected:
                    break
                time.sleep(0.5)
            dash.send_signal(signal.SIGTERM)
            dash.wait(60)
            stats = json.loads(wait_file(Path(dash_spec["result_file"]), 10))
            lags = [r[0] * 1000.0 for r in
                    db.execute("SELECT ingested_ts - ts FROM metrics").fetchall()]
            ingested = db.execute("SELECT MIN(ingested_ts), MAX(ingested_ts) FROM metrics") \
                .fetchone()
            db.close()
        gen_pct = _fleet_cpu_pct(work, len(specs))
        span_s = max(1e-9, (ingested[1] or 0) - (ingested[0] or 0))
        return {
            "boxes": connected,
            "boxes_asked": boxes,
            "duration_s": duration_s,
            "msgs_per_s": round(got / span_s, 1),
            "sent": expected,
            "stored": got,
            "lost": max(0, expected - got),
            "duplicated": int(stats.get("duplicates", 0)),
            "lag_ms_p50": _round(_pct(lags, 50)),
            "lag_ms_p99": _round(_pct(lags, 99)),
            "lag_ms_max": _round(max(lags) if lags else None),
            "dashboard_cpu_pct": round(100.0 * dash_cpu / window_s, 1),
            "generator_cpu_pct": gen_pct,
            "broker_cpu_pct": round(100.0 * broker_cpu / window_s, 1),
            "generator_processes": len(specs),
            "quarantined": stats.get("quarantined"),
            "resend_requests": stats.get("resend_requests"),
            "provision_s": round(provision_s, 1),
            "cpus": os.cpu_count(),
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(ram, ignore_errors=True)


def _fleet_cpu_pct(work: Path, n: int) -> float:
    """Generator CPU over the emitting window, in percent of one core (summed over processes)."""
    total = 0.0
    for k in range(n):
        emit = json.loads((work / f"fleet{k}.cpu").read_text())
        total += 100.0 * emit["cpu_s"] / max(1e-9, emit["wall_s"])
    return round(total, 1)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the child processes (``fleet``, ``box``, ``dashboard``)."""
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="python -m bench.ingest",
                                     description="Child processes of the ingest benchmark.")
    parser.add_argument("kind", choices=("fleet", "box", "dashboard"), help="what to run")
    parser.add_argument("spec", type=Path, help="JSON spec file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = json.loads(args.spec.read_text())
    if args.kind == "fleet":
        run_fleet(spec)
    elif args.kind == "box":
        run_box(spec)
    else:
        run_dashboard(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Transport fixtures: real Mosquitto, box processes, fleets of simulated boxes, the ingest.

The slow acceptance scenarios (60 s outages) are independent, so :func:`outages` runs them all
at once, each in its own thread with its own brokers, and the tests then check each result.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bench.ingest import child, fleet_specs, wait_file
from dashboard.ingest import Ingest
from dashboard.settings import DashboardSettings
from edge.outbox import numbers_used
from provisioning.broker import (
    SiteFiles,
    add_bridge,
    make_central,
    make_site,
    new_site_dir,
)
from provisioning.pki import CertPair

SITE = "site-1"
OUTAGE_S = 60.0
"""Outage length the issue asks for (broker stopped, ingest down, central broker stopped)."""
SETTLE_S = 180.0
"""Liveness bound for recovery after an outage (reconnect backoff reaches 64 s)."""


def ingest_for(site: str, db: Path, port: int, ca: Path, identity: CertPair) -> Ingest:
    """A started dashboard ingest on ``db``."""
    settings = DashboardSettings(site=site, db_path=db, mqtt_host="localhost", mqtt_port=port,
                                 mqtt_ca=ca, mqtt_cert=identity.cert, mqtt_key=identity.key)
    ing = Ingest(settings)
    ing.start()
    assert ing.wait_connected(20), "ingest could not connect"
    return ing


def stored(db: Path) -> dict[str, list[int]]:
    """Per box, the stream seqs in the dashboard database in insertion order."""
    with sqlite3.connect(db, timeout=10) as conn:
        rows = conn.execute(
            "SELECT box, seq, rowid, 0 FROM metrics UNION ALL "
            "SELECT box, seq, rowid, 1 FROM events ORDER BY 1, 4, 3").fetchall()
    out: dict[str, list[int]] = {}
    for box, seq, _, _ in rows:
        out.setdefault(box, []).append(int(seq))
    return out


def newest_seqs(db: Path) -> dict[str, int]:
    """Per box, the highest stream seq in the dashboard database."""
    with sqlite3.connect(db, timeout=10) as conn:
        rows = conn.execute("SELECT box, MAX(seq) FROM (SELECT box, seq FROM metrics UNION ALL "
                            "SELECT box, seq FROM events) GROUP BY box").fetchall()
    return {box: int(seq) for box, seq in rows}


def count_rows(db: Path) -> int:
    """Stream rows in the dashboard database."""
    with sqlite3.connect(db, timeout=10) as conn:
        return int(conn.execute("SELECT (SELECT COUNT(*) FROM metrics) + "
                                "(SELECT COUNT(*) FROM events)").fetchone()[0])


def complete(db: Path, expected: dict[str, tuple[int, int]]) -> bool:
    """True when every box's seqs ``first..last`` (``expected[box]``) are in the database."""
    got = stored(db)
    return all(sorted(got.get(b, [])) == list(range(first, last + 1))
               for b, (first, last) in expected.items())


def published_again(db: Path, newest: dict[str, int], boxes: list[str]) -> bool:
    """True when every box has a message stored that it numbered after the outage: at one a
    second, more than :data:`OUTAGE_S` past its newest stored before (``newest``), so its
    outage's backlog went first (oldest first) and it publishes live again."""
    got = newest_seqs(db)
    return all(got.get(box, 0) > newest.get(box, 0) + OUTAGE_S for box in boxes)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` every 0.2 s up to ``timeout_s`` (a liveness bound, not a timing)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


def outbox_sent(state: Path) -> int:
    """How many messages a box process put in its outbox (read from its SQLite file)."""
    first, last = numbers_used(state / "outbox.sqlite")
    return last - first + 1


@dataclass
class BoxProc:
    """A box process (``python -m bench.ingest box``) with its state directory."""

    site: SiteFiles
    box: str
    work: Path
    port: int
    rate_hz: float = 1.0
    backlog: int = 0
    keepalive_s: int = 10
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def state(self) -> Path:
        """The box's state directory."""
        return self.work / "state" / self.box

    def start(self) -> BoxProc:
        """Start (or restart) the process on the same state directory."""
        pair = self.site.box(self.box)
        spec = {"site": self.site.site, "host": "localhost", "port": self.port,
                "ca": str(self.site.ca_cert), "state_root": str(self.work / "state"),
                "boxes": [{"id": self.box, "cert": str(pair.cert), "key": str(pair.key)}],
                "rate_hz": self.rate_hz, "backlog": self.backlog if self.starts == 0 else 0,
                "keepalive_s": self.keepalive_s}
        self.starts += 1
        self.proc = child("box", spec, self.work / f"{self.box}-spec{self.starts}.json")
        return self

    def quiesce(self) -> tuple[int, int]:
        """Stop emitting (SIGUSR1), keep serving resends; return the first and last seq emitted."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)
        quiet = self.state / "quiet"
        wait_file(quiet, 30, [self.proc])
        first, last = quiet.read_text().split()
        return int(first), int(last)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 30 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Fleet:
    """Simulated boxes in child processes (``python -m bench.ingest fleet``)."""

    site: SiteFiles
    work: Path
    boxes: list[str]
    per_process: int = 100
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    specs: list[dict[str, Any]] = field(default_factory=list)

    def start(self) -> Fleet:
        """Start the processes and wait until every box has connected."""
        self.specs = fleet_specs(self.site, self.boxes, self.work, per_process=self.per_process,
                                 rate_hz=1.0, keepalive_s=10, drain_s=60.0, serve_after=True)
        self.procs = [child("fleet", s, self.work / f"fleet{k}-spec.json")
                      for k, s in enumerate(self.specs)]
        for s in self.specs:
            wait_file(Path(s["ready_file"]), 120, self.procs)
        return self

    def quiesce(self) -> dict[str, tuple[int, int]]:
        """Stop emitting, keep serving resends; return each box's first and last seq."""
        for p in self.procs:
            p.send_signal(signal.SIGUSR1)
        out: dict[str, tuple[int, int]] = {}
        for s in self.specs:
            quiet = Path(s["result_file"]).with_suffix(".quiet")
            out.update({b: (first, last) for b, (first, last)
                        in json.loads(wait_file(quiet, 60, self.procs)).items()})
        return out

    def stop(self) -> None:
        """SIGTERM every process and wait."""
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(90)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class Scenario:
    """A site dir, its broker and helpers, cleaned up at the end."""

    def __init__(self, name: str, boxes: list[str]) -> None:
        self.dir = new_site_dir(f"miroir-{name}-")
        self.site = make_site(self.dir, SITE, boxes)
        self.work = self.dir / "work"
        self.work.mkdir()
        self.db = self.work / "dash.sqlite"
        self.broker = self.site.broker()
        self.cleanup: list[Callable[[], None]] = []

    def ingest(self) -> Ingest:
        """A started ingest for this site (closed at cleanup)."""
        ing = ingest_for(SITE, self.db, self.site.port, self.site.ca_cert, self.site.dashboard)
        self.cleanup.append(ing.close)
        return ing

    def close(self) -> None:
        """Stop everything started and remove the directory."""
        for fn in reversed(self.cleanup):
            try:
                fn()
            except Exception:
                traceback.print_exc()
        self.broker.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


# ----------------------------------------------------------------------------- the scenarios
def scenario_broker_stopped(sc: Scenario) -> dict[str, Any]:
    """One box at its normal rate; the broker stopped for 60 s, then restarted."""
    sc.broker.start()
    ing = sc.ingest()
    box = BoxProc(sc.site, "box-a", sc.work, sc.site.port)
    sc.cleanup.append(box.stop)
    box.start()
    wait_for(lambda: count_rows(sc.db) >= 5, 60, "first messages")
    sc.broker.stop()
    time.sleep(OUTAGE_S)
    sc.broker.start()
    wait_for(lambda: count_rows(sc.db) > outbox_sent(box.state) - 2 > OUTAGE_S, SETTLE_S,
             "the box to catch up")
    numbers = box.quiesce()
    wait_for(lambda: complete(sc.db, {"box-a": numbers}), SETTLE_S, "every message")
    return {"expected": {"box-a": numbers}, "stored": stored(sc.db), "stats": ing.stats()}


def _fleet_scenario(sc: Scenario, outage: Callable[[], None]) -> dict[str, Any]:
    sc.broker.start()
    ing_box: list[Ingest] = [sc.ingest()]
    fleet = Fleet(sc.site, sc.work, sorted(sc.site.boxes))
    sc.cleanup.append(fleet.stop)
    fleet.start()
    wait_for(lambda: count_rows(sc.db) >= 5 * len(fleet.boxes), 60, "load")
    newest = newest_seqs(sc.db)
    outage()
    wait_for(lambda: published_again(sc.db, newest, fleet.boxes), SETTLE_S,
             "every box to publish again after the outage")
    expected = fleet.quiesce()
    wait_for(lambda: complete(sc.db, expected), SETTLE_S, "every message of every box")
    return {"expected": expected, "stored": stored(sc.db), "stats": ing_box[0].stats()}


def scenario_broker_killed(sc: Scenario) -> dict[str, Any]:
    """200 boxes; the broker killed with SIGKILL, down 60 s, restarted."""
    def outage() -> None:
        sc.broker.kill()
        time.sleep(OUTAGE_S)
        sc.broker.start()
    return _fleet_scenario(sc, outage)


def scenario_ingest_down(sc: Scenario) -> dict[str, Any]:
    """200 boxes; the dashboard's ingest down for 60 s, then a new one on the same database."""
    stats: dict[str, Any] = {}

    def outage() -> None:
        ing = sc.cleanup[0]  # the first ingest's close
        ing()
        sc.cleanup.pop(0)
        time.sleep(OUTAGE_S)
        stats["second"] = sc.ingest()

    result = _fleet_scenario(sc, outage)
    result["stats"] = stats["second"].stats()
    return result


def scenario_bridge(sc: Scenario) -> dict[str, Any]:
    """Site broker bridged to a central broker; central stopped 60 s, site restarted meanwhile."""
    central = make_central(sc.dir / "central", [SITE])
    add_bridge(sc.site, central)
    central_broker = central.broker()
    sc.cleanup.append(central_broker.kill)
    central_broker.start()
    sc.broker.start()
    central_db = sc.work / "central.sqlite"
    ing = ingest_for(SITE, central_db, central.port, central.ca.cert, central.dashboards[SITE])
    sc.cleanup.append(ing.close)
    box = BoxProc(sc.site, "box-a", sc.work, sc.site.port)
    sc.cleanup.append(box.stop)
    box.start()
    wait_for(lambda: count_rows(central_db) >= 5, 60, "messages through the bridge")
    newest = newest_seqs(central_db)
    central_broker.stop()
    time.sleep(OUTAGE_S / 3)
    sc.broker.restart()  # the site broker restarts while the central one is away
    time.sleep(OUTAGE_S * 2 / 3)
    central_broker.start()
    wait_for(lambda: published_again(central_db, newest, ["box-a"]), SETTLE_S,
             "the box's messages through the bridge again")
    numbers = box.quiesce()
    wait_for(lambda: complete(central_db, {"box-a": numbers}), SETTLE_S, "every message centrally")
    return {"expected": {"box-a": numbers}, "stored": stored(central_db), "stats": ing.stats(),
            "bridge_log": sc.site.log.read_text()[-4000:]}


SCENARIOS: dict[str, tuple[Callable[[Scenario], dict[str, Any]], list[str]]] = {
    "broker_stopped": (scenario_broker_stopped, ["box-a"]),
    "broker_killed": (scenario_broker_killed, [f"k-{i:03d}" for i in range(200)]),
    "ingest_down": (scenario_ingest_down, [f"d-{i:03d}" for i in range(200)]),
    "bridge": (scenario_bridge, ["box-a"]),
}


@pytest.fixture(scope="session")
def outages() -> Iterator[Callable[[str], dict[str, Any]]]:
    """Run every 60-s outage scenario concurrently; ``outages(name)`` waits for one's result."""
    results: dict[str, Any] = {}
    threads = []

    def run(name: str) -> None:
        fn, boxes = SCENARIOS[name]
        sc = Scenario(name.replace("_", "-"), boxes)
        try:
            started = time.monotonic()
            results[name] = fn(sc)
            results[name]["duration_s"] = time.monotonic() - started
        except BaseException as exc:
            results[name] = exc
            traceback.print_exc()
        finally:
            sc.close()

    for name in SCENARIOS:
        t = threading.Thread(target=run, args=(name,), name=name, daemon=True)
        t.start()
        threads.append((name, t))

    def get(name: str) -> dict[str, Any]:
        for n, t in threads:
            if n == name:
                t.join()
        value = results[name]
        if isinstance(value, BaseException):
            raise AssertionError(f"scenario {name} failed: {value!r}") from value
        return dict(value)

    yield get
    for _, t in threads:
        t.join()

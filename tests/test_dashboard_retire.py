"""A box revoked as the IT guide says (section 5), then retired from the dashboard: the real site,
Mosquitto, dashboard (ingest, /metrics), box publishers and both CLIs."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dashboard import db as store
from dashboard import fleet, schema
from dashboard.app import DashboardServer
from dashboard.settings import DashboardSettings
from edge.publisher import Publisher
from miroir import wire
from provisioning.broker import Mosquitto, free_port, new_site_dir
from provisioning.inventory import parse_csv
from provisioning.site import Site, init_site
from tests._fixtures_broker import box_publisher, wait_until
from tests._fixtures_dashboard import http_login, make_settings

pytestmark = pytest.mark.e2e

SITE = "paris-1"
TOKEN = "scrape-token-0123456789abcdef"
FLOOR = [{"box": "box-001", "seat": "A-01", "agent": "Priya", "team": "north"},
         {"box": "box-002", "seat": "A-02", "agent": "Rahul", "team": "north"}]
SILENT_S = 3.0
"""fleet.SILENT_AFTER_S made short (30 s in service) so that the box goes offline quickly."""


@pytest.fixture
def floor(tmp_path: Path) -> Iterator[tuple[Site, Mosquitto, DashboardSettings]]:
    """The IT guide's two boxes enrolled, the broker running, the dashboard's settings."""
    root = new_site_dir("miroir-retire-")
    try:
        site = init_site(root / "site", SITE, broker_host="localhost", port=free_port(),
                         bind="127.0.0.1")
        csv_path = root / "floor.csv"
        csv_path.write_text("box,seat,agent,team\n" + "".join(
            f"{r['box']},{r['seat']},{r['agent']},{r['team']}\n" for r in FLOOR))
        site.enroll(parse_csv(csv_path))
        (tmp_path / "token").write_text(TOKEN)
        settings = make_settings(tmp_path, site=SITE, mqtt_host="localhost", mqtt_port=site.port,
                                 mqtt_ca=site.ca.cert, mqtt_cert=site.dashboard.cert,
                                 mqtt_key=site.dashboard.key, metrics_token_file=tmp_path / "token")
        db = store.open_db(settings.db_path)
        schema.ensure_schema(db)
        schema.import_inventory(db, FLOOR, site=SITE)
        db.conn.close()
        broker = Mosquitto(site.config, site.port, site.log).start()
        try:
            yield site, broker, settings
        finally:
            broker.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _publish(pub: Publisher, seq: int) -> None:
    """The box's retained "online" status and one metrics message."""
    pub.publish_status("online").wait_for_publish(5.0)
    site, box = pub.settings.site, pub.settings.box
    msg = {"v": wire.SCHEMA_VERSION, "site": site, "box": box, "ts": time.time(), "seq": seq,
           "t_start": float(seq), "window_s": 1.0, "talk_state": "agent"}
    assert pub.send(seq, "metrics", wire.encode("metrics", msg))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "miroir", *args], capture_output=True,
                          text=True, timeout=60)


def _guide_retire(box: str, site: Site, settings: DashboardSettings,
                  tmp: Path) -> subprocess.CompletedProcess[str]:
    """The IT guide's retire command (section 5, "a box is lost or stolen") run as written, for
    ``box``, with the dashboard.env site-init wrote (its database moved to the test's)."""
    guide = (Path(__file__).resolve().parents[1] / "docs" / "it-guide.md").read_text()
    row = next(ln for ln in guide.splitlines() if ln.startswith("| a box is lost or stolen"))
    command = re.search(r"`(sudo sh -c '[^`]*miroir dashboard retire box-017')`", row)
    assert command, row
    env_file = tmp / "dashboard.env"
    env_file.write_text(re.sub(r"^MIROIR_DASH_DB_PATH=.*$", f"MIROIR_DASH_DB_PATH={settings.db_path}",
                               (site.dir / "dashboard.env").read_text(), flags=re.M))
    script = shlex.split(command.group(1).replace("box-017", box))
    assert script[:3] == ["sudo", "sh", "-c"], script
    line = script[3].replace("/var/lib/miroir-site/dashboard.env", str(env_file))
    line = line.replace("exec miroir ", f"exec {shlex.quote(sys.executable)} -m miroir ")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIROIR_DASH_")}
    env["SUDO_USER"] = "it-tech"  # as sudo sets it
    return subprocess.run(["sh", "-c", line], env=env, capture_output=True, text=True, timeout=60)


class View:
    """What site IT and Prometheus see of the running dashboard."""

    def __init__(self) -> None:
        self.cookie: dict[str, str] = {}

    def read(self, server: DashboardServer) -> dict[str, Any]:
        from prometheus_client.parser import text_string_to_metric_families

        with httpx.Client(base_url=server.url, timeout=10.0) as c:
            if not self.cookie:
                self.cookie = {"cookie": f"__Host-miroir={http_login(c)}"}
            fleet_json = c.get("/api/fleet", headers=self.cookie).json()
            floor_json = c.get("/api/floor", headers=self.cookie).json()
            boxes_json = c.get("/api/boxes", headers=self.cookie).json()
            text = c.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text
        samples = {(s.name, s.labels.get("box")): s.value
                   for f in text_string_to_metric_families(text) for s in f.samples}
        return {"fleet": [b["box"] for b in fleet_json["boxes"]],
                "offline": [b["box"] for b in fleet_json["boxes"] if b["offline"]],
                "alerts": [a["box"] for a in fleet_json["alerts"]],
                "history": fleet_json["history"],
                "seats": [(s["box"], s["label"]) for s in floor_json["seats"]],
                "boxes": [b["box"] for b in boxes_json["boxes"]],
                "up": {box: v for (name, box), v in samples.items() if name == "miroir_box_up"},
                "refused": samples.get(("miroir_ingest_retired_refused_total", None)),
                "quarantined": samples.get(("miroir_ingest_quarantined_total", None)),
                "alerts_active": samples[("miroir_alerts_active", None)]}


def test_a_revoked_box_retired_leaves_the_dashboard_and_keeps_its_history(
        floor: tuple[Site, Mosquitto, DashboardSettings], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """IT guide section 5 followed: `miroir provision revoke box-002`. The dashboard kept box-002
    for good: an offline alert without end, miroir_box_up{box="box-002"} 0 (the guide's own
    Prometheus rule fires forever), its seat on the floor, and no command to take it off; after a
    restart its retained "online" status even brought it back online for 30 s. Now
    `miroir dashboard retire box-002` takes it off the floor, the IT page, /metrics and the
    alerts, frees its seat, refuses (and counts) what it still publishes, keeps its history and
    is audited: the IT guide's command for it, run as written. The revocation also removes its
    retained status from the broker, so a restarted dashboard is not told it is online."""
    monkeypatch.setattr(fleet, "SILENT_AFTER_S", SILENT_S)
    site, broker, settings = floor
    view = View()
    server = DashboardServer(settings)
    server.start()
    pubs: list[Publisher] = []
    try:
        assert server.ingest is not None and server.ingest.wait_connected(10.0)
        pubs = [box_publisher(site, r["box"], tmp_path / r["box"]) for r in FLOOR]
        for pub in pubs:
            _publish(pub, 1)
        wait_until(lambda: server.ingest is not None and server.ingest.stats()["inserted"] >= 2,
                   "both boxes' metrics stored")
        seen = view.read(server)
        assert seen["up"] == {"box-001": 1.0, "box-002": 1.0}
        assert seen["seats"] == [("box-001", "A-01"), ("box-002", "A-02")]

        done = _cli("provision", "revoke", "box-002", "--site-dir", str(site.dir),
                    "--broker-pid", str(broker.pid))
        assert done.returncode == 0 and "revoked" in done.stdout, done.stderr
        # box-001 goes on; box-002 falls silent: offline, alerted, down in Prometheus
        deadline = time.monotonic() + 10.0 * SILENT_S
        while "box-002" not in view.read(server)["alerts"]:
            assert time.monotonic() < deadline, "no offline alert for the revoked box"
            pubs[0].publish_status("online").wait_for_publish(5.0)
            time.sleep(0.5)
        seen = view.read(server)
        assert seen["up"]["box-002"] == 0.0 and seen["alerts_active"] == 1
        assert seen["quarantined"] == 0  # its retained status cleared: not a bad message

        done = _guide_retire("box-002", site, settings, tmp_path)
        assert done.returncode == 0, done.stderr
        assert "box box-002 retired" in done.stdout and "seat A-02 freed" in done.stdout
        assert "1 open alert(s) closed" in done.stdout
        seen = view.read(server)
        assert seen["fleet"] == ["box-001"] and "box-002" not in seen["alerts"]
        assert seen["alerts_active"] == len(seen["alerts"])
        assert [a["cleared_ts"] is not None for a in seen["history"] if a["box"] == "box-002"
                ] == [True]  # the episode stays in the history, closed
        assert list(seen["up"]) == ["box-001"]  # no box-002 series left for the alert rule
        assert seen["seats"] == [("box-001", "A-01")] and seen["boxes"] == ["box-001"]
        assert seen["refused"] == 0.0
    finally:
        server.stop()

    # the dashboard restarts: the broker holds no status of box-002 any more (revoke cleared its
    # retained "online"); what a retired box still sends is refused and counted
    server = DashboardServer(settings)
    server.start()
    try:
        ingest = server.ingest
        assert ingest is not None and ingest.wait_connected(10.0)
        wait_until(lambda: ingest.stats()["received"] >= 1, "box-001's retained status")
        until = time.monotonic() + SILENT_S + 2 * fleet.ALERT_CHECK_S  # box-002 would be offline
        while time.monotonic() < until:
            pubs[0].publish_status("online").wait_for_publish(5.0)
            time.sleep(0.5)
        assert ingest.stats()["retired_refused"] == 0 and ingest.stats()["quarantined"] == 0
        status = wire.status_message(SITE, "box-002", "online", time.time())
        assert ingest.handle(wire.topic(SITE, "box-002", "status"),
                             wire.encode("status", status)) == "retired"
        seen = view.read(server)
        assert seen["fleet"] == ["box-001"] and "box-002" not in seen["alerts"]
        assert list(seen["up"]) == ["box-001"] and seen["refused"] == 1
        assert [a["box"] for a in seen["history"]].count("box-002") == 1  # no new episode
    finally:
        server.stop()
        for pub in pubs:
            pub.stop()

    db = store.open_db(settings.db_path)
    try:
        # its history stays (until the retention purge); Rahul's seat window is closed
        assert db.conn.execute("SELECT count(*) FROM metrics WHERE box = 'box-002'"
                               ).fetchone()[0] == 1
        assert db.conn.execute("SELECT count(*) FROM seat_history WHERE box = 'box-002' AND "
                               "agent = 'Rahul' AND to_ts IS NOT NULL").fetchone()[0] == 1
        [entry] = db.query("SELECT * FROM audit_log WHERE action = 'retire_box'")
        assert (entry["actor"], entry["actor_role"], entry["agent"]) == ("it-tech", "it", "Rahul")
        assert '"box":"box-002"' in entry["detail"] and '"seat":"A-02"' in entry["detail"]
        # importing its row again is refused, whole: a retired id is not used again
        with pytest.raises(ValueError, match="box-002 was retired"):
            schema.import_inventory(db, [{"box": "box-003", "seat": "A-03"}, FLOOR[1]], site=SITE)
        assert db.conn.execute("SELECT count(*) FROM seats WHERE box IN ('box-002', 'box-003')"
                               ).fetchone()[0] == 0
    finally:
        db.conn.close()
    again = _guide_retire("box-002", site, settings, tmp_path)
    assert again.returncode == 0 and "already retired" in again.stdout, again.stderr
    unknown = _guide_retire("box-999", site, settings, tmp_path)
    assert unknown.returncode == 3 and "not known to this dashboard" in unknown.stderr
    assert "Traceback" not in unknown.stderr

def _site_with_box_a(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A dashboard database knowing box-a at seat A, and the environment of a `miroir dashboard`
    command reading it (the shell's own MIROIR_DASH_* left out)."""
    db_path = tmp_path / "db.sqlite"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MIROIR_DASH_")},
           "MIROIR_DASH_SITE": SITE, "MIROIR_DASH_DB_PATH": str(db_path)}
    db = store.open_db(db_path)
    try:
        schema.ensure_schema(db)
        schema.import_inventory(db, [{"box": "box-a", "seat": "A"}], site=SITE)
    finally:
        db.conn.close()
    return db_path, env



def test_retiring_a_box_twice_says_when_with_the_servers_offset(tmp_path: Path) -> None:
    """`miroir dashboard retire` on a box already retired says since when, in the server's
    zone with its offset: site IT on a server set to Mauritius read "16:44" where the audit
    page said 13:44 to a reader in Paris and the retirement was at 12:44 UTC, with no zone."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    db_path, env = _site_with_box_a(tmp_path)
    env["TZ"] = "Indian/Mauritius"
    cmd = [sys.executable, "-m", "miroir", "dashboard", "retire", "box-a"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0 and "retired" in first.stdout, first.stderr
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    db = store.open_db(db_path)
    try:
        retired_ts = db.conn.execute("SELECT retired_ts FROM retired_boxes WHERE box = 'box-a'"
                                     ).fetchone()[0]
    finally:
        db.conn.close()
    when = datetime.fromtimestamp(retired_ts, ZoneInfo("Indian/Mauritius"))
    assert f"already retired ({when.isoformat(sep=' ', timespec='minutes')})" in again.stdout, \
        again.stdout
    assert again.stdout.rstrip().endswith("+04:00)"), again.stdout


def test_retiring_a_box_the_dashboard_never_knew_has_an_exit_code_of_its_own(
        tmp_path: Path) -> None:
    """A box id the dashboard never knew (a typo, a box never enrolled) exited 2, argparse's code
    for a usage error, the same as a missing argument or bad settings: a script retiring a list
    could not tell them apart. It exits 3 (nothing changed), as the README says; a malformed id
    is still a usage error."""
    _, env = _site_with_box_a(tmp_path)

    def retire(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "miroir", "dashboard", "retire", *args],
                              env=env, capture_output=True, text=True, timeout=60)

    unknown = retire("box-b")
    assert (unknown.returncode, unknown.stderr) == (
        3, "miroir: error: box box-b is not known to this dashboard (no seat, never heard); "
           "nothing changed\n")
    assert retire("Box B!").returncode == 2  # not a box id at all
    assert retire().returncode == 2  # argparse: the box is missing
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    row = next(ln for ln in readme.splitlines() if ln.startswith("| `miroir dashboard retire"))
    assert "3 when the dashboard never knew the box" in row, row

"""A 50-box floor provisioned from a CSV, served by a real Mosquitto with the generated config.

Every box connects with the real box publisher (edge.publisher) and the files of its own
first-boot bundle. A box revoked while connected is cut off within 5 s and refused afterwards;
a rotated box reconnects with its new certificate, and its old one is refused once retired.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge import settings as edge_settings
from edge.publisher import Publisher
from provisioning.broker import Mosquitto, free_port, new_site_dir
from provisioning.bundle import install_bundle
from provisioning.inventory import REVOKED, parse_csv
from provisioning.pki import CertPair
from provisioning.site import Site, init_site, signal_reload
from tests._fixtures_broker import Peer, refused, wait_until

SITE = "floor-1"
N_BOXES = 50
CUT_OFF_S = 5.0

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def floor() -> Iterator[tuple[Site, Mosquitto, Path]]:
    """A site with 50 boxes enrolled from a CSV, and its broker running."""
    root = new_site_dir("miroir-floor-")
    site_dir = root / "site"
    site_dir.mkdir(mode=0o755)
    site = init_site(site_dir, SITE, broker_host="localhost", port=free_port(), bind="127.0.0.1")
    csv_path = root / "floor.csv"
    rows = ["box,seat,agent,team"] + [
        f"box-{i:03d},seat {i:03d},Agent {i},team-{i % 5}" for i in range(1, N_BOXES + 1)]
    csv_path.write_text("\n".join(rows) + "\n")
    site.enroll(parse_csv(csv_path))
    broker = Mosquitto(site.config, site.port, site.log).start()
    try:
        yield site, broker, root
    finally:
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)


def box_publisher(site: Site, box: str, where: Path, bundle: Path | None = None) -> Publisher:
    """Install a box's bundle into ``where`` and start the box's publisher with those files."""
    install_bundle(bundle or site.bundle_path(box), where)
    creds = where / "credentials"
    cfg = edge_settings.load(where / "box.toml", ca_file=str(creds / "ca.pem"),
                             cert_file=str(creds / "box.pem"), key_file=str(creds / "box.key"),
                             state_dir=str(where), keepalive_s=5)
    assert (cfg.site, cfg.box, cfg.broker_host, cfg.broker_port) == (SITE, box, "localhost", site.port)
    pub = Publisher(cfg, version="test")
    pub.start()
    return pub


def is_refused(pair: CertPair, site: Site) -> bool:
    """True if the broker refuses this identity now (False while it still accepts it)."""
    try:
        return "refused" in refused(pair, site.ca.cert, site.port, "probe")
    except AssertionError:
        return False


def test_fifty_boxes_revoke_and_rotate(floor: tuple[Site, Mosquitto, Path]) -> None:
    site, broker, root = floor
    inv = site.inventory()
    assert len(inv.boxes) == N_BOXES
    assert inv.get("box-007").seat == "seat 007" and inv.get("box-007").team == "team-2"

    boxes = [f"box-{i:03d}" for i in range(1, N_BOXES + 1)]
    pubs = {box: box_publisher(site, box, root / "boxes" / box) for box in boxes}
    try:
        wait_until(lambda: all(p.connected.is_set() for p in pubs.values()),
                   "all 50 boxes connected")
        assert site.log.read_text().count("New client connected") >= N_BOXES

        # Revoke a box while it is connected: cut off within 5 s, refused from then on.
        victim = "box-007"
        t0 = time.monotonic()
        result = site.revoke(victim, signal_reload(broker.pid or 0))
        deadline = t0 + CUT_OFF_S
        while pubs[victim].connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        cut_off_s = time.monotonic() - t0
        print(f"\nrevoke -> box disconnected in {cut_off_s * 1000:.0f} ms "
              f"(revoke call {result.duration_s * 1000:.0f} ms, kicked={result.kicked})")
        assert not pubs[victim].connected.is_set(), f"{victim} still connected after {CUT_OFF_S} s"
        assert result.kicked
        assert site.inventory().get(victim).state == REVOKED
        assert not site.bundle_path(victim).exists()
        # Its own reconnection attempts (paho retries every 1 s and more) all fail.
        time.sleep(3.0)
        assert not pubs[victim].connected.is_set(), "the revoked box got back in"
        pair = site.box_pair(victim)
        assert "refused" in refused(pair, site.ca.cert, site.port, "box-floor-1-box-007")
        assert "certificate verify failed" in site.log.read_text()
        others = [b for b in boxes if b != victim]
        assert all(pubs[b].connected.is_set() for b in others), "a revocation hit other boxes"

        # Rotate a box: new certificate, the box reconnects with it (old one still valid).
        rotated = "box-010"
        old_pair = CertPair(root / "old-010.pem", root / "old-010.key")
        shutil.copy(site.box_pair(rotated).cert, old_pair.cert)
        shutil.copy(site.box_pair(rotated).key, old_pair.key)
        bundle = site.rotate(rotated)
        assert site.inventory().get(rotated).previous_serials
        assert pubs[rotated].connected.is_set(), "rotation must not cut the box off"
        pubs[rotated].stop()
        pubs[rotated] = box_publisher(site, rotated, root / "boxes" / f"{rotated}-new", bundle)
        wait_until(lambda: pubs[rotated].connected.is_set(), "the rotated box reconnected")
        # the old key in other hands, connected while the box is off (one client per CN: a box
        # that is on takes its session back)
        pubs[rotated].stop()
        old_conn = Peer(old_pair, site.ca.cert, "anything", site.port)
        rc = old_conn.connect()
        assert rc is not None and not rc.is_failure and not old_conn.disconnected
        retired = site.finish_rotation(rotated, signal_reload(broker.pid or 0))
        assert len(retired.serials) == 1 and retired.kicked
        wait_until(lambda: old_conn.disconnected, "the old certificate's open connection cut")
        old_conn.close()
        wait_until(lambda: is_refused(old_pair, site), "the retired certificate refused")
        pubs[rotated] = box_publisher(site, rotated, root / "boxes" / f"{rotated}-new", bundle)
        wait_until(lambda: pubs[rotated].connected.is_set(), "the box back with its new certificate")
        assert all(pubs[b].connected.is_set() for b in others)
    finally:
        for pub in pubs.values():
            pub.stop()

"""`miroir provision`: site-init, enrolment (CSV errors by line, all or nothing), bundles, backup."""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from miroir.cli import main
from provisioning import bundle as bundle_mod
from provisioning import pki
from provisioning import site as site_mod
from provisioning.broker import Mosquitto, free_port, new_site_dir
from provisioning.inventory import INVENTORY_FILE
from provisioning.site import Site
from tests._fixtures_broker import Peer, wait_until

SITE = "paris-1"


@pytest.fixture
def site_dir() -> Iterator[Path]:
    """A site initialised through the CLI."""
    root = new_site_dir("miroir-prov-")
    d = root / "site"
    assert main(["provision", "site-init", "--site-dir", str(d), "--site", SITE,
                 "--broker-host", "broker.lan", "--port", "18883"]) == 0
    try:
        yield d
    finally:
        shutil.rmtree(root, ignore_errors=True)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` with its content (to prove nothing changed)."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_site_init_writes_everything_with_safe_modes(site_dir: Path) -> None:
    site = Site(site_dir)
    assert mode(site.ca.key) == 0o600 and not (site_dir / "admin").exists()  # no standing admin key
    assert mode(site_dir / "admin-password") == 0o600
    assert len((site_dir / "admin-password").read_text().strip()) >= 16
    assert mode(site_dir / "bundles") == 0o700
    conf = site.config.read_text()
    assert "require_certificate true" in conf and f"crlfile {site.crl}" in conf
    assert "listener 18883 0.0.0.0" in conf and "use_username_as_clientid true" in conf
    # the broker refuses every client once the CRL's next update passes: it lasts as long as the CA
    crl = pki.x509.load_pem_x509_crl(site.crl.read_bytes())
    assert crl.next_update_utc == pki.load_cert(site.ca.cert).not_valid_after_utc
    acl = site.acl.read_text()
    assert "user admin_paris-1\ntopic deny #" in acl
    env = (site_dir / "dashboard.env").read_text()
    assert "MIROIR_DASH_SITE=paris-1" in env and "MIROIR_DASH_ADMIN_PASSWORD_FILE=" in env
    san = pki.load_cert(site.server.cert).extensions.get_extension_for_class(
        pki.x509.SubjectAlternativeName).value
    assert "broker.lan" in san.get_values_for_type(pki.x509.DNSName)
    # A second site-init must never overwrite the CA.
    before = site.ca.key.read_bytes()
    assert main(["provision", "site-init", "--site-dir", str(site_dir), "--site", SITE,
                 "--broker-host", "x"]) == 2
    assert site.ca.key.read_bytes() == before


def test_enroll_one_box_and_its_bundle(site_dir: Path, tmp_path: Path) -> None:
    assert main(["provision", "enroll", "--site-dir", str(site_dir), "box-1", "--seat", "A1",
                 "--agent", "Priya", "--team", "north"]) == 0
    site = Site(site_dir)
    rec = site.inventory().get("box-1")
    assert (rec.seat, rec.agent, rec.team, rec.state) == ("A1", "Priya", "north", "active")
    assert rec.serial == format(pki.load_cert(site.box_pair("box-1").cert).serial_number, "x")
    bundle = site.bundle_path("box-1")
    assert mode(bundle) == 0o600
    digest = Path(f"{bundle}.sha256").read_text().split()[0]
    import hashlib
    assert hashlib.sha256(bundle.read_bytes()).hexdigest() == digest
    b = bundle_mod.install_bundle(bundle, tmp_path / "data" / "miroir")
    creds = tmp_path / "data" / "miroir" / "credentials"
    assert b.box == "box-1" and mode(creds / "box.key") == 0o600 and mode(creds) == 0o700
    assert (creds / "box.key").read_text() == site.box_pair("box-1").key.read_text()
    toml = (tmp_path / "data" / "miroir" / "box.toml").read_text()
    assert 'broker_host = "broker.lan"' in toml and "broker_port = 18883" in toml
    # The same box twice is refused.
    assert main(["provision", "enroll", "--site-dir", str(site_dir), "box-1", "--seat", "A2"]) == 2


def test_tampered_bundle_is_refused(site_dir: Path, tmp_path: Path) -> None:
    Site(site_dir).enroll([site_mod.Enrolment(box="box-2", seat="B1")])
    data = json.loads(Site(site_dir).bundle_path("box-2").read_text())
    data["settings_toml"] = data["settings_toml"].replace("broker.lan", "evil.example")
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(data))
    with pytest.raises(bundle_mod.BundleError, match="checksum"):
        bundle_mod.install_bundle(forged, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    assert bundle_mod.main(["verify", str(forged)]) == 2


def test_bad_csv_rows_reported_by_line_and_nothing_written(
        site_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(site_dir)
    csv_path = tmp_path / "floor.csv"
    csv_path.write_text(
        "box,seat,agent,team\n"          # line 1
        "box-1,A1,Ana,north\n"           # line 2: fine
        "Box_2,A2,Ben,north\n"           # line 3: bad id
        "# a comment\n"                  # line 4: skipped
        "box-1,A3,Chloé,south\n"         # line 5: duplicate box
        "box-4,,Dan,south\n"             # line 6: no seat
        "box-5,A5\n"                     # line 7: too few fields
        "box-6,A6,Eve,south\n")          # line 8: fine
    assert main(["provision", "enroll-csv", "--site-dir", str(site_dir), str(csv_path)]) == 2
    out = capsys.readouterr().out
    for line, what in ((3, "box id"), (5, "already on line 2"), (6, "seat is empty"),
                       (7, "fields")):
        assert any(f"floor.csv:{line}:" in row and what in row for row in out.splitlines()), (
            line, out)
    assert "floor.csv:2:" not in out and "floor.csv:8:" not in out
    assert snapshot(site_dir) == before, "a bad CSV must not write anything"


def test_a_box_id_with_a_trailing_newline_is_refused(site_dir: Path) -> None:
    """"box-001\n" passed the id check ($ matches before a final newline): its ACL lines then
    split, and revoking it denied the real box-001."""
    before = snapshot(site_dir)
    assert main(["provision", "enroll", "--site-dir", str(site_dir), "box-001\n", "--seat", "A1"]) == 2
    assert main(["provision", "enroll", "--site-dir", str(site_dir), "box-001", "--seat", "A1\n"]) == 2
    assert snapshot(site_dir) == before


def test_a_broker_bound_to_one_address_is_reached_there_by_the_dashboard(tmp_path: Path) -> None:
    """With --bind on one LAN address, the broker does not listen on localhost: the dashboard's
    settings and the revocation kick use that address (it is in the broker certificate)."""
    root = new_site_dir("miroir-prov-")
    try:
        assert main(["provision", "site-init", "--site-dir", str(root / "s"), "--site", SITE,
                     "--broker-host", "192.168.10.5", "--bind", "192.168.10.5"]) == 0
        site = Site(root / "s")
        assert site.admin_host == "192.168.10.5"
        assert "MIROIR_DASH_MQTT_HOST=192.168.10.5\n" in (root / "s" / "dashboard.env").read_text()
        san = pki.load_cert(site.server.cert).extensions.get_extension_for_class(
            pki.x509.SubjectAlternativeName).value
        assert "192.168.10.5" in [str(a) for a in san.get_values_for_type(pki.x509.IPAddress)]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_damaged_files_and_bad_arguments_are_one_line_errors(
        site_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Site IT gets ``miroir: error: ...`` (exit 2) naming the problem, never a traceback."""
    def error(*argv: str) -> str:
        capsys.readouterr()
        assert main(["provision", *argv]) == 2
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err and err.startswith("miroir: error: ")
        return out + err

    inventory = site_dir / INVENTORY_FILE
    good = inventory.read_text()
    inventory.write_text(good[: len(good) // 2])  # truncated by a full disk
    assert "inventory.json is damaged" in error("enroll", "--site-dir", str(site_dir), "box-1",
                                                 "--seat", "A1")
    inventory.write_text(json.dumps({"site": SITE, "boxes": [{"box": "box-1", "colour": "red"}]}))
    assert "inventory.json is damaged" in error("revoke", "--site-dir", str(site_dir), "box-1")
    inventory.write_text(good)
    site_json = site_dir / "site.json"
    good = site_json.read_text()
    site_json.write_text("{")
    assert "site.json is damaged" in error("enroll", "--site-dir", str(site_dir), "box-1",
                                            "--seat", "A1")
    site_json.write_text(good)
    assert "missing: no such file" in error("backup", "--site-dir", str(site_dir), str(tmp_path / "b"),
                                   "--passphrase-file", str(tmp_path / "missing"))
    new = str(tmp_path / "new")
    assert "neither an IP address nor a DNS name" in error(
        "site-init", "--site-dir", new, "--site", "x", "--broker-host", 'srv"01')
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:  # a usage error of the command, its range named
        main(["provision", "site-init", "--site-dir", new, "--site", "x", "--broker-host",
              "srv01", "--port", "99999"])
    assert stop.value.code == 2
    assert "argument --port: 99999 is outside 1 to 65535" in capsys.readouterr().err
    assert not Path(new).exists()


def test_renew_gives_the_broker_and_the_dashboard_new_certificates_live(tmp_path: Path) -> None:
    """825 days on, the broker's and the dashboard's certificates would lapse and every client be
    refused: `renew` issues new ones (same names, same key owners), signs the CRL again and
    reloads the broker; a connected box stays, new connections see the new certificate, and the
    dashboard connects with its new identity."""
    import socket
    import ssl

    root = new_site_dir("miroir-renew-")
    try:
        port = free_port()
        assert main(["provision", "site-init", "--site-dir", str(root / "s"), "--site", SITE,
                     "--broker-host", "localhost", "--bind", "127.0.0.1",
                     "--port", str(port)]) == 0
        site = Site(root / "s")
        site.enroll([site_mod.Enrolment(box="box-1", seat="A1")])
        old_serials = {p: pki.load_cert(p).serial_number for p in (site.server.cert, site.dashboard.cert)}
        conf = site.config.read_text()  # a site made before client ids were bound to certificates
        site.config.write_text(conf.replace("use_username_as_clientid true\n", ""))
        key_mode = mode(site.server.key), site.server.key.stat().st_gid
        (site.dir / INVENTORY_FILE).chmod(0o644)  # and its private files as earlier versions left them
        (site.dir / "boxes").chmod(0o755)

        def served_serial() -> int:
            ctx = ssl.create_default_context(cafile=str(site.ca.cert))
            ctx.load_cert_chain(str(site.box_pair("box-1").cert), str(site.box_pair("box-1").key))
            with socket.create_connection(("127.0.0.1", port)) as raw, \
                    ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                der = tls.getpeercert(True)
            assert der is not None
            return pki.x509.load_der_x509_certificate(der).serial_number

        broker = Mosquitto(site.config, port, site.log).start()
        try:
            box = Peer(site.box_pair("box-1"), site.ca.cert, "box-1", port)
            assert not box.connect().is_failure
            assert served_serial() == old_serials[site.server.cert]
            assert main(["provision", "renew", "--site-dir", str(site.dir),
                         "--broker-pid", str(broker.pid)]) == 0
            assert all(pki.load_cert(p).serial_number != old for p, old in old_serials.items())
            assert (mode(site.server.key), site.server.key.stat().st_gid) == key_mode
            new_serial = pki.load_cert(site.server.cert).serial_number
            wait_until(lambda: served_serial() == new_serial, "the broker serving its new certificate")
            dash = Peer(site.dashboard, site.ca.cert, "dashboard", port)
            assert not dash.connect().is_failure
            assert not box.disconnected
            assert site.config.read_text() == conf  # the configuration brought up to date
            assert (mode(site.dir / INVENTORY_FILE), mode(site.dir / "boxes")) == (0o600, 0o700)
            dash.close()
            box.close()
        finally:
            broker.stop()
        crl = pki.x509.load_pem_x509_crl(site.crl.read_bytes())
        assert crl.next_update_utc == pki.load_cert(site.ca.cert).not_valid_after_utc
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_csv_clashing_with_inventory_writes_nothing(site_dir: Path, tmp_path: Path) -> None:
    site = Site(site_dir)
    site.enroll([site_mod.Enrolment(box="box-1", seat="A1")])
    before = snapshot(site_dir)
    csv_path = tmp_path / "more.csv"
    csv_path.write_text("box,seat\nbox-2,A2\nbox-1,A9\nbox-3,A1\n")
    assert main(["provision", "enroll-csv", "--site-dir", str(site_dir), str(csv_path)]) == 2
    assert snapshot(site_dir) == before


def test_failure_in_the_middle_of_an_enrolment_leaves_nothing(
        site_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(site_dir)
    real_issue = pki.issue
    calls = []

    def flaky(*args: object, **kwargs: object) -> pki.CertPair:
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_issue(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pki, "issue", flaky)
    items = [site_mod.Enrolment(box=f"box-{i}", seat=f"S{i}") for i in range(5)]
    with pytest.raises(OSError, match="disk full"):
        Site(site_dir).enroll(items)
    assert snapshot(site_dir) == before
    assert not [p for p in site_dir.iterdir() if p.name.startswith(".enroll-")]


def test_backup_and_restore(site_dir: Path, tmp_path: Path) -> None:
    site = Site(site_dir)
    site.enroll([site_mod.Enrolment(box="box-1", seat="A1", agent="Ana")])
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery staple\n")
    out = tmp_path / "site.bak"
    assert main(["provision", "backup", "--site-dir", str(site_dir), str(out),
                 "--passphrase-file", str(pw)]) == 0
    assert mode(out) == 0o600
    assert site.ca.key.read_bytes() not in out.read_bytes()
    wrong = tmp_path / "wrong"
    wrong.write_text("not the right passphrase\n")
    dest = tmp_path / "restored"
    assert main(["provision", "restore", str(out), "--site-dir", str(dest),
                 "--passphrase-file", str(wrong)]) == 2
    assert not dest.exists()
    damaged = tmp_path / "damaged.bak"
    data = bytearray(out.read_bytes())
    data[-40] ^= 1
    damaged.write_bytes(bytes(data))
    assert main(["provision", "restore", str(damaged), "--site-dir", str(dest),
                 "--passphrase-file", str(pw)]) == 2
    assert not dest.exists()
    assert main(["provision", "restore", str(out), "--site-dir", str(dest),
                 "--passphrase-file", str(pw)]) == 0
    back = Site(dest)
    assert back.ca.key.read_bytes() == site.ca.key.read_bytes()
    assert mode(back.ca.key) == 0o600
    assert back.inventory().get("box-1").agent == "Ana"
    assert (dest / INVENTORY_FILE).exists() and (dest / "persist").is_dir()
    assert mode(dest / "bundles") == 0o700


def test_a_site_restored_elsewhere_runs_its_broker(site_dir: Path, tmp_path: Path) -> None:
    """A backup restored on a new server, in another folder, with the old one gone: the broker
    starts on the restored config (its paths moved along; its log, left out of the backup, made
    again) and takes the site's boxes."""
    Site(site_dir).enroll([site_mod.Enrolment(box="box-1", seat="A1")])
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery staple\n")
    assert main(["provision", "backup", "--site-dir", str(site_dir), str(tmp_path / "b"),
                 "--passphrase-file", str(pw)]) == 0
    root = new_site_dir("miroir-restored-")
    try:
        dest = root / "site"
        assert main(["provision", "restore", str(tmp_path / "b"), "--site-dir", str(dest),
                     "--passphrase-file", str(pw)]) == 0
        shutil.rmtree(site_dir)
        site = Site(dest)
        assert str(site_dir) not in site.config.read_text()
        port = free_port()
        site.config.write_text(site.config.read_text().replace("listener 18883 0.0.0.0",
                                                               f"listener {port} 127.0.0.1"))
        broker = Mosquitto(site.config, port, site.log).start()
        try:
            peer = Peer(site.box_pair("box-1"), site.ca.cert, "box-1", port)
            rc = peer.connect()
            assert rc is not None and not rc.is_failure
            peer.close()
        finally:
            broker.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


ENROL_MANY = """
import sys
from pathlib import Path
from provisioning.inventory import Enrolment
from provisioning.site import Site
site = Site(Path(sys.argv[1]))
for i in range(8):
    site.enroll([Enrolment(box=f"{sys.argv[2]}-{i}", seat=f"{sys.argv[2]} {i}")])
"""


def test_two_enrolments_at_once_lose_no_box(site_dir: Path) -> None:
    """Two IT scripts enrol boxes into the same site at the same time: every box is in the
    inventory afterwards (each loaded and saved the inventory on its own, losing the other's)."""
    import subprocess
    import sys

    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", ENROL_MANY, str(site_dir), name], env=env)
             for name in ("north", "south")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    boxes = set(Site(site_dir).inventory().boxes)
    assert boxes == {f"{side}-{i}" for side in ("north", "south") for i in range(8)}


def test_a_backup_cut_short_is_a_one_line_error(
        site_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A copy of the backup interrupted early (a USB stick pulled out) stopped inside the header:
    the restore ended in a traceback ("Nonce must be between 8 and 128 bytes") instead of
    saying the file is damaged."""
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery staple\n")
    out = tmp_path / "site.bak"
    assert main(["provision", "backup", "--site-dir", str(site_dir), str(out),
                 "--passphrase-file", str(pw)]) == 0
    whole = out.read_bytes()
    dest = tmp_path / "restored"
    for size in (10, 20, 36, 52, len(whole) // 2):
        cut = tmp_path / f"cut-{size}.bak"
        cut.write_bytes(whole[:size])
        capsys.readouterr()
        assert main(["provision", "restore", str(cut), "--site-dir", str(dest),
                     "--passphrase-file", str(pw)]) == 2, size
        err = capsys.readouterr().err
        assert err.startswith("miroir: error: ") and "damaged" in err, (size, err)
        assert not dest.exists()


def test_a_backup_waits_for_an_enrolment_in_progress(
        site_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backup taken while another script enrolled boxes read the boxes' folder before their
    files landed and the inventory after it was saved: restored, the site listed boxes it held no
    certificate of, and `revoke` of such a box failed ("No such file"; 10 of 21 backups taken
    during a 300-box enrolment). A backup now takes the site's lock, as every site command does."""
    import threading

    from provisioning.inventory import Inventory

    inside, release = threading.Event(), threading.Event()
    real_save = Inventory.save

    def slow_save(self: Inventory, d: Path) -> Path:
        if threading.current_thread().name == "enrol":
            inside.set()  # the box's files are in place, its inventory record not yet
            release.wait(30)
        return real_save(self, d)

    monkeypatch.setattr(Inventory, "save", slow_save)
    site = Site(site_dir)
    enrol = threading.Thread(name="enrol", target=site.enroll,
                             args=([site_mod.Enrolment(box="box-1", seat="A1")],))
    enrol.start()
    assert inside.wait(30)
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery staple\n")
    out = tmp_path / "site.bak"
    taken: list[int] = []
    backup = threading.Thread(target=lambda: taken.append(main([
        "provision", "backup", "--site-dir", str(site_dir), str(out),
        "--passphrase-file", str(pw)])))
    backup.start()
    backup.join(5)  # before the fix the backup was done by now, with half an enrolment
    release.set()
    enrol.join(30)
    backup.join(30)
    assert taken == [0]
    dest = tmp_path / "restored"
    assert main(["provision", "restore", str(out), "--site-dir", str(dest),
                 "--passphrase-file", str(pw)]) == 0
    back = Site(dest)
    assert set(back.inventory().boxes) == {"box-1"}
    assert sorted(p.name for p in (dest / "boxes").iterdir()) == ["box-1"]
    assert back.box_pair("box-1").cert.exists() and back.bundle_path("box-1").exists()


def test_a_revoked_box_id_is_not_sent_to_rotate(
        site_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Enrolling a revoked box's id again said "use rotate", and rotate then said "enrol a new box
    id instead": site IT went round in circles. Enrol now names the way out: a new id."""
    site = Site(site_dir)
    site.enroll([site_mod.Enrolment(box="box-1", seat="A1")])
    site.revoke("box-1", lambda: None, kick=False, confirm=False)  # no broker here
    capsys.readouterr()
    assert main(["provision", "enroll", "--site-dir", str(site_dir), "box-1", "--seat", "A1"]) == 2
    out = capsys.readouterr().out
    assert "revoked" in out and "new box id" in out and "rotate" not in out, out
    assert main(["provision", "enroll", "--site-dir", str(site_dir), "box-2", "--seat", "A1"]) == 0


def test_backup_and_restore_say_the_dashboard_database_is_not_in_the_backup(
        site_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The site backup holds the site folder only: the dashboard's users, audit log and history
    live in its own database. Nothing said so, and a site rebuilt from the backup alone had an
    empty dashboard that refused to start (its admin-password emptied, as the IT guide asks)."""
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery staple\n")
    out = tmp_path / "site.bak"
    capsys.readouterr()
    assert main(["provision", "backup", "--site-dir", str(site_dir), str(out),
                 "--passphrase-file", str(pw)]) == 0
    said = capsys.readouterr().out
    assert "/var/lib/miroir-dashboard/dashboard.sqlite" in said, said
    assert "miroir dashboard backup" in said, said
    assert main(["provision", "restore", str(out), "--site-dir", str(tmp_path / "r"),
                 "--passphrase-file", str(pw)]) == 0
    said = capsys.readouterr().out
    assert "miroir dashboard restore" in said, said


def test_a_backup_written_over_an_old_one_is_private(site_dir: Path, tmp_path: Path) -> None:
    """A backup written over an existing file kept that file's mode: over a copy left readable
    by everyone (0644), the site's encrypted keys were readable by every local user."""
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery staple\n")
    out = tmp_path / "site.bak"
    out.write_bytes(b"an older backup, copied back from a USB stick")
    out.chmod(0o644)
    assert main(["provision", "backup", "--site-dir", str(site_dir), str(out),
                 "--passphrase-file", str(pw)]) == 0
    assert mode(out) == 0o600
    assert main(["provision", "restore", str(out), "--site-dir", str(tmp_path / "r"),
                 "--passphrase-file", str(pw)]) == 0


def test_a_restored_site_keeps_every_mode(site_dir: Path, tmp_path: Path) -> None:
    """Restored under the usual umask (022), each box's key folder (boxes/box-1: its key and
    certificate) came back 0755 where the site made it 0700, as the IT guide promises for the
    folders of keys: the archive's folder modes were left to the umask. Every file and folder
    now has the mode the site gave it."""
    Site(site_dir).enroll([site_mod.Enrolment(box="box-1", seat="A1")])
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery staple\n")
    assert main(["provision", "backup", "--site-dir", str(site_dir), str(tmp_path / "b"),
                 "--passphrase-file", str(pw)]) == 0
    dest = tmp_path / "restored"
    umask = os.umask(0o022)
    try:
        assert main(["provision", "restore", str(tmp_path / "b"), "--site-dir", str(dest),
                     "--passphrase-file", str(pw)]) == 0
    finally:
        os.umask(umask)
    skip = {"persist", ".lock"}  # the broker's own (made afresh) and the lock
    before = {p.relative_to(site_dir): mode(p) for p in site_dir.rglob("*")
              if p.relative_to(site_dir).parts[0] not in skip}
    after = {p.relative_to(dest): mode(p) for p in dest.rglob("*")
             if p.relative_to(dest).parts[0] not in skip}
    assert {str(k): oct(v) for k, v in after.items() if before.get(k) != v} == {}
    assert mode(dest / "boxes" / "box-1") == 0o700


def test_a_backup_that_cannot_be_written_says_which_and_keeps_the_old_one(
        site_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A site backup onto a full USB key said only "error: [Errno 28] No space left on device"
    (measured on a full tmpfs), naming no file and not saying whether the backup already there
    survived; onto a path through a file, it named that file's temporary copy. It now names the
    backup and says nothing was written, the older backup kept."""
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery staple\n")
    blocker = tmp_path / "usb"
    blocker.write_text("a file where a folder was expected")
    out = blocker / "site.bak"
    assert main(["provision", "backup", "--site-dir", str(site_dir), str(out),
                 "--passphrase-file", str(pw)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write the backup {out}" in err and "nothing written" in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_a_csv_lists_every_wrong_row_at_once(
        site_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Rows that clash with the site (a box already enrolled, a seat taken) were reported only once
    every malformed row was fixed: site IT fixed the file in two rounds, though the IT guide says
    every wrong row is listed."""
    Site(site_dir).enroll([site_mod.Enrolment(box="box-001", seat="A1")])
    before = snapshot(site_dir)
    csv_path = tmp_path / "floor.csv"
    csv_path.write_text(
        "box,seat,agent,team\n"
        "box-009,A9,Ana,north\n"        # line 2: fine
        "box-010,A9,Ben,north\n"        # line 3: seat A9 already given to box-009
        "box-001,A2,Chloe,south\n"      # line 4: box already enrolled
        "box-012,\"A12,\",Dan,south\n"  # line 5: malformed seat
        "box-013,A1,Eve,south\n")       # line 6: seat taken by box-001
    capsys.readouterr()
    assert main(["provision", "enroll-csv", "--site-dir", str(site_dir), str(csv_path)]) == 2
    out = capsys.readouterr().out
    for line, what in ((3, "seat 'A9' is already taken"), (4, "already enrolled"),
                       (5, "seat 'A12,'"), (6, "seat 'A1' is already taken")):
        assert any(f"line {line}" in row or f"floor.csv:{line}:" in row for row in
                   out.splitlines() if what in row), (line, out)
    assert "line 2" not in out and "floor.csv:2:" not in out
    assert snapshot(site_dir) == before


def test_a_site_restored_where_the_broker_cannot_reach_says_so(
        site_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Restored as root under a folder the broker's user cannot traverse (pytest's 0700 tmp, or
    /root), the site was "restored" without a word and Mosquitto then failed to open its ACL and
    log; site-init refuses such a folder. Restore now warns, naming the folder."""
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery staple\n")
    out = tmp_path / "site.bak"
    assert main(["provision", "backup", "--site-dir", str(site_dir), str(out),
                 "--passphrase-file", str(pw)]) == 0
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    capsys.readouterr()
    assert main(["provision", "restore", str(out), "--site-dir", str(locked / "site"),
                 "--passphrase-file", str(pw)]) == 0
    said = capsys.readouterr().out
    if os.geteuid() == 0:  # Mosquitto started as root drops to the mosquitto user
        assert "warning: the broker's user (mosquitto) cannot traverse" in said, said
        assert f"cannot run the site from {locked / 'site'}" in said, said
    else:  # it runs as this user: nothing to warn of
        assert "warning" not in said
    root = new_site_dir("miroir-restored-")
    try:
        assert main(["provision", "restore", str(out), "--site-dir", str(root / "site"),
                     "--passphrase-file", str(pw)]) == 0
        assert "warning" not in capsys.readouterr().out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_rotated_bundle_keeps_the_boxs_own_settings_and_files(
        site_dir: Path, tmp_path: Path) -> None:
    """IT guide §5, rotate: the new bundle is installed on the box as first boot does (`python -m
    provisioning.bundle install`) over the folder the first one made and site IT then edited
    (§4: affect_enabled, campaign_file; the README: capture_device). The new certificate and key
    are in, and the edits and the campaign file are kept: before, the whole folder was replaced
    and the box ran on the defaults, its campaign file gone."""
    import subprocess
    import sys

    from edge import settings as edge_settings

    assert main(["provision", "enroll", "--site-dir", str(site_dir), "box-1", "--seat", "A1"]) == 0
    site = Site(site_dir)
    dest = tmp_path / "data" / "miroir"
    bundle_mod.install_bundle(site.bundle_path("box-1"), dest)
    campaign = dest / "campaign.toml"
    campaign.write_text("[affect]\ndisclosed = true\n")
    box_toml = dest / "box.toml"
    box_toml.write_text(box_toml.read_text().replace('"miroir_headset"', '"hw:CARD=USB,DEV=0"')
                        + f'affect_enabled = true\ncampaign_file = "{campaign}"\n')
    old_key = (dest / "credentials" / "box.key").read_text()

    site.rotate("box-1")
    done = subprocess.run([sys.executable, "-m", "provisioning.bundle", "install",
                           str(site.bundle_path("box-1")), str(dest)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    key = (dest / "credentials" / "box.key").read_text()
    assert key != old_key and key == site.box_pair("box-1").key.read_text()
    assert mode(dest / "credentials" / "box.key") == 0o600
    assert campaign.read_text() == "[affect]\ndisclosed = true\n"
    s = edge_settings.load(box_toml)
    assert (s.box, s.broker_host, s.broker_port) == ("box-1", "broker.lan", 18883)
    assert s.affect_enabled is True and s.campaign_file == campaign
    assert s.capture_device == "hw:CARD=USB,DEV=0"
    assert not list(tmp_path.joinpath("data").glob(".miroir*"))  # no stage or old copy left


def test_a_new_bundle_still_decides_the_boxs_identity_and_broker(tmp_path: Path) -> None:
    """The box's own lines are kept for every key but those the bundle decides: a box.toml edited
    to another broker or box id gets the bundle's back."""
    bundle_toml = bundle_mod.box_settings_toml(SITE, "box-2", "broker.lan", 8883)
    edited = bundle_toml.replace('"broker.lan"', '"elsewhere.lan"').replace('"box-2"', '"box-9"')
    merged = bundle_mod.merge_settings(bundle_toml, edited + "keepalive_s = 30\n")
    import tomllib
    data = tomllib.loads(merged)
    assert (data["box"], data["broker_host"], data["keepalive_s"]) == ("box-2", "broker.lan", 30)
    assert bundle_mod.merge_settings(bundle_toml, "keepalive_s = 30\nkeepalive_s = 31\n") \
        == bundle_toml  # a box file that is no TOML: the bundle's settings alone


@pytest.mark.parametrize("damaged", ["inventory.json", "site.json"])
def test_a_damaged_site_is_not_backed_up_over_the_good_backup(
        site_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damaged: str) -> None:
    """The IT guide: a damaged site.json or inventory.json stops every command ("restore the site
    from its backup"). `backup` went on: written over the USB key's good backup (the guide's same
    FILE each time), it left only the damaged site to restore."""
    site = Site(site_dir)
    site.enroll([site_mod.Enrolment(box="box-1", seat="A1", agent="Ana")])
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery staple\n")
    out = tmp_path / "paris-1.bak"
    args = ["provision", "backup", "--site-dir", str(site_dir), str(out), "--passphrase-file",
            str(pw)]
    assert main(args) == 0
    good = out.read_bytes()
    capsys.readouterr()
    (site_dir / damaged).write_text("{broken")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{damaged} is damaged" in err and "no backup" in err
    assert out.read_bytes() == good
    dest = tmp_path / "restored"
    assert main(["provision", "restore", str(out), "--site-dir", str(dest),
                 "--passphrase-file", str(pw)]) == 0
    assert Site(dest).inventory().get("box-1").agent == "Ana"


ENROL = ("enroll", "box-002", "--seat", "A-02")
REVOKE = ("revoke", "box-001", "--broker-pid", "1")
EXPIRY = ("expiry",)


@pytest.mark.parametrize(("damaged", "how", "commands"), [
    ("ca/key.pem", "garbage", (ENROL, REVOKE)), ("ca/key.pem", "missing", (ENROL, REVOKE)),
    ("ca/cert.pem", "cut", (ENROL, REVOKE, EXPIRY)), ("crl.pem", "cut", (REVOKE, EXPIRY)),
    ("boxes/box-001/cert.pem", "empty", (REVOKE, EXPIRY))])
def test_a_damaged_or_missing_pem_file_is_a_one_line_error_naming_it(
        site_dir: Path, capsys: pytest.CaptureFixture[str], damaged: str, how: str,
        commands: tuple[tuple[str, ...], ...]) -> None:
    """A site's CA key, CA certificate, revocation list or box certificate damaged (a full disk,
    a bad copy) or gone stopped enrol, revoke and expiry with a Python traceback (exit 1) or a
    bare "[Errno 2]": each is one line naming the file and saying to restore the site from its
    backup, exit 2, and nothing in the site changes."""
    assert main(["provision", "enroll", "--site-dir", str(site_dir), "box-001",
                 "--seat", "A-01"]) == 0
    path = site_dir / damaged
    if how == "missing":
        path.unlink()
    else:
        path.write_bytes({"garbage": b"not a key\n", "empty": b"",
                          "cut": path.read_bytes()[:120]}[how])
    before = snapshot(site_dir)
    for argv in commands:
        capsys.readouterr()
        assert main(["provision", *argv, "--site-dir", str(site_dir)]) == 2, argv
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err and err.count("\n") == 1, (argv, err)
        assert err.startswith(f"miroir: error: {path} is ") and "miroir provision restore" in err, \
            (argv, err)
        assert snapshot(site_dir) == before, argv


@pytest.mark.parametrize("name", ["Jean Dupont", "o'brien", "x$(id)", ""])
def test_an_admin_name_the_shell_cannot_read_back_is_refused(
        capsys: pytest.CaptureFixture[str], name: str) -> None:
    """`site-init --admin-user "Jean Dupont"` wrote `MIROIR_DASH_ADMIN_USER=Jean Dupont` into
    dashboard.env, which every `miroir dashboard` command of the IT guide reads with `sh` (`set -a;
    . dashboard.env`): "Dupont: not found"; an apostrophe stopped the file there, and `$(...)`
    ran as root. Such a name is refused in one line, and nothing is written."""
    import subprocess

    root = new_site_dir("miroir-admin-")
    new = root / "site"
    try:
        assert main(["provision", "site-init", "--site-dir", str(new), "--site", SITE,
                     "--broker-host", "srv01", "--admin-user", name]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"miroir: error: admin user {name!r} must be 1 to 64 letters, "
                              "digits or _ . @ -") and err.count("\n") == 1, err
        assert not new.exists()
        assert main(["provision", "site-init", "--site-dir", str(new), "--site", SITE,
                     "--broker-host", "srv01", "--admin-user", "jean.dupont"]) == 0
        read = subprocess.run(["sh", "-c", f'set -a; . "{new}/dashboard.env"; '
                               'printf %s "$MIROIR_DASH_ADMIN_USER"'],
                              capture_output=True, text=True, check=True)
        assert (read.stdout, read.stderr) == ("jean.dupont", "")
    finally:
        shutil.rmtree(root, ignore_errors=True)

"""`miroir provision` as site IT's scripts run it: the real CLI in a subprocess, on real files."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from miroir import wire
from provisioning import pki
from provisioning.broker import Mosquitto, dashboard_identity, free_port, new_site_dir
from provisioning.inventory import Enrolment
from provisioning.site import Site, init_site
from tests._fixtures_broker import Peer, box_publisher, wait_until

SITE = "paris-1"


def cli(*args: str, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    """Run ``miroir provision ARGS`` in a subprocess with ``umask``, as a script would."""
    return subprocess.run([sys.executable, "-m", "miroir", "provision", *args],
                          capture_output=True, text=True, timeout=120, check=False,
                          preexec_fn=lambda: os.umask(umask) and None)


@pytest.fixture
def other() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is not the broker (it ignores SIGHUP): a wrong ``--broker-pid``, whose
    reload the broker never sees."""
    import signal

    proc = subprocess.Popen(["sleep", "120"],
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN) and None)
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def site_dir() -> Iterator[Path]:
    """A site made by the real ``site-init``."""
    root = new_site_dir("miroir-scripts-")
    d = root / "site"
    done = cli("site-init", "--site-dir", str(d), "--site", SITE, "--broker-host", "broker.lan",
               "--port", "18883")
    assert done.returncode == 0, done.stderr
    try:
        yield d
    finally:
        shutil.rmtree(root, ignore_errors=True)



def test_the_backup_site_init_asks_for_is_a_command_that_works_as_typed(tmp_path: Path) -> None:
    """`site-init` ended "next: back up the CA now (`miroir provision backup`)", which typed as
    it stands stops at "the following arguments are required: out" (exit 2). Its hint is now a
    whole command, run here as IT would type it in a shell (passphrase piped, no terminal)."""
    import re
    import shlex

    root = new_site_dir("miroir-hint-")
    try:
        done = cli("site-init", "--site-dir", str(root / "site"), "--site", SITE,
                   "--broker-host", "broker.lan")
        assert done.returncode == 0, done.stderr
        hint = done.stdout.splitlines()[-1]
        assert hint.startswith("next: back up the CA now"), done.stdout
        [typed] = re.findall(r"`(miroir provision backup[^`]*)`", hint)
        script = typed.replace("miroir ", f"{shlex.quote(sys.executable)} -m miroir ", 1)
        run = subprocess.run(["sh", "-c", script], input="correct horse\ncorrect horse\n",
                             capture_output=True, text=True, timeout=120, check=False,
                             start_new_session=True, cwd=root / "site",
                             env={**os.environ, "HOME": str(tmp_path)})
        assert run.returncode == 0, (typed, run.stderr)
        assert run.stdout.startswith(f"backup written to {tmp_path / (SITE + '.bak')}"), run.stdout
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize(("bind", "option", "host"), [
    ("127.0.0.1", "--broker-host", "192.168.10.5"),  # loopback only: no box reaches it
    ("::1", "--broker-host", "broker.lan"),
    ("127.0.0.1", "--extra-host", "broker.lan"),
    ("192.168.10.5", "--broker-host", "localhost"),  # one LAN address: not on loopback
    ("0.0.0.0", "--broker-host", "fd00::5"),  # IPv4 only
    ("::", "--broker-host", "192.168.10.5"),  # IPv6 only (Mosquitto binds :: so)
])
def test_a_broker_address_its_listener_never_answers_is_refused(
        tmp_path: Path, bind: str, option: str, host: str) -> None:
    """`site-init --bind 127.0.0.1 --broker-host 192.168.10.5` was accepted (exit 0, the listener
    on loopback): no box could ever connect. It is refused in one line naming both options, exit
    2, nothing written; so is each other address a listener so bound never answers at."""
    first = ["--broker-host", "localhost" if bind.startswith(("127.", "::1")) else "broker.lan"]
    hosts = ["--broker-host", host] if option == "--broker-host" else [*first, option, host]
    done = cli("site-init", "--site-dir", str(tmp_path / "site"), "--site", SITE, "--bind", bind,
               *hosts)
    assert done.returncode == 2, done.stdout
    [line] = [x for x in done.stderr.splitlines() if "INFO" not in x]
    assert f"--bind {bind}" in line and f"{option} {host}" in line, line
    assert not (tmp_path / "site").exists()


def test_mosquitto_bound_to_the_ipv6_any_address_does_not_answer_on_ipv4() -> None:
    """Why `--bind ::` with an IPv4 --broker-host is refused: measured on the real broker, a
    listener on :: answers on ::1 and not on 127.0.0.1 (Mosquitto sets IPV6_V6ONLY)."""
    import socket

    root = new_site_dir("miroir-v6-")
    try:
        port = free_port()
        site = init_site(root / "site", SITE, broker_host="localhost", port=port, bind="::")
        with Mosquitto(site.config, port, root / "m.log", host="::1"):
            socket.create_connection(("::1", port), timeout=5).close()
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=5)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _hints(text: str) -> list[str]:
    """Every command line a provisioning command printed (between backquotes, or an expiry
    row's action)."""
    import re

    found = re.findall(r"`(miroir [^`]*)`", text)
    for row in text.splitlines():
        if " UTC  miroir " in row:
            found += row.split(" UTC  ", 1)[1].split(", then ")
    return found


def test_every_command_the_provisioning_commands_print_runs_on_their_site(tmp_path: Path) -> None:
    """`revoke` said "back up the site again (`miroir provision backup FILE`)": run on a site
    outside the default folder, as typed that backs up /var/lib/miroir-site, another site or
    none ("is not a site directory"); so did rotate's `--finish`, restore's `revoke BOX`, expiry's
    and the failed reloads' commands, and `miroir provision restore` or `miroir dashboard import`
    (no file) stopped at their parser (exit 2). Every command they print now parses as the real
    CLI's parser takes it, and names the site folder the command was run on."""
    import shlex

    from miroir.cli import build_parser

    root = new_site_dir("miroir-hints-")
    site_dir, restored = root / "site", root / "restored"
    runs: list[tuple[Path, subprocess.CompletedProcess[str]]] = []

    def run(where: Path, *args: str) -> subprocess.CompletedProcess[str]:
        done = cli(*args)
        runs.append((where, done))
        return done

    try:
        port = free_port()
        assert run(site_dir, "site-init", "--site-dir", str(site_dir), "--site", SITE,
                   "--broker-host", "localhost", "--bind", "127.0.0.1",
                   "--port", str(port)).returncode == 0
        for box, seat in (("box-001", "A-01"), ("box-002", "A-02")):
            assert run(site_dir, "enroll", "--site-dir", str(site_dir), box, "--seat",
                       seat).returncode == 0
        floor = tmp_path / "floor.csv"
        floor.write_text("box,seat,agent\nbox-002,A-02,Zoe\n")  # its agent differs: skipped
        assert run(site_dir, "enroll-csv", "--site-dir", str(site_dir), str(floor)).returncode == 0
        floor.write_text("box,seat\nbox-002,A-09\n")  # at another seat: refused
        assert run(site_dir, "enroll-csv", "--site-dir", str(site_dir), str(floor)).returncode == 2
        assert run(site_dir, "rotate", "--site-dir", str(site_dir), "box-001").returncode == 0
        assert run(site_dir, "rotate", "--site-dir", str(site_dir), "box-001").returncode == 2
        run(site_dir, "expiry", "--site-dir", str(site_dir), "--all")
        dead = subprocess.Popen(["true"])
        dead.wait()
        for args in (("rotate", "box-001", "--finish"), ("renew",), ("revoke", "box-001")):
            assert run(site_dir, *args, "--site-dir", str(site_dir), "--broker-pid",
                       str(dead.pid)).returncode == 2
            assert run(site_dir, *args, "--site-dir", str(site_dir), "--broker-unit",
                       "miroir-no-such-unit.service").returncode == 2
        site = Site(site_dir)
        with Mosquitto(site.config, site.port, site.log) as broker:
            assert run(site_dir, "revoke", "box-002", "--site-dir", str(site_dir),
                       "--broker-pid", str(broker.pid)).returncode == 0
        secret = tmp_path / "passphrase"
        secret.write_text("correct horse\n")
        backup = tmp_path / "site.bak"
        assert run(site_dir, "backup", "--site-dir", str(site_dir), str(backup),
                   "--passphrase-file", str(secret)).returncode == 0
        assert run(restored, "restore", str(backup), "--site-dir", str(restored),
                   "--passphrase-file", str(secret)).returncode == 0
        assert run(root / "none", "expiry", "--site-dir", str(root / "none")).returncode == 2
        for damaged in ("site.json", "inventory.json", "crl.pem"):
            (restored / damaged).write_text("{")
            assert run(restored, "expiry", "--site-dir", str(restored)).returncode == 2
            shutil.rmtree(restored)
            assert run(restored, "restore", str(backup), "--site-dir", str(restored),
                       "--passphrase-file", str(secret)).returncode == 0
        parser = build_parser()
        seen = set()
        for where, done in runs:
            for hint in _hints(done.stdout + done.stderr):
                words = shlex.split(hint)
                try:
                    parsed = parser.parse_args(words[1:])
                except SystemExit:
                    pytest.fail(f"{' '.join(done.args[3:])} printed `{hint}`, which its parser "
                                "refuses")
                if words[1] == "provision" and words[2] != "restore":
                    assert parsed.site_dir == where, (done.args[3:], hint)
                if hasattr(parsed, "broker_pid") and ("--broker-pid" in done.args
                                                       or "--broker-unit" in done.args):
                    # the broker it was told to reload, not mosquitto.service by default
                    ran = parser.parse_args(done.args[3:])
                    assert (parsed.broker_pid, parsed.broker_unit) == (
                        ran.broker_pid, ran.broker_unit), (done.args[3:], hint)
                seen.add(" ".join(words[1:3]))
        assert seen == {"provision backup", "provision rotate", "provision revoke",
                        "provision renew", "provision restore", "provision site-init",
                        "dashboard backup", "dashboard restore", "dashboard import"}, seen
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_csv_run_again_enrols_only_its_new_rows(site_dir: Path, tmp_path: Path) -> None:
    """IT reruns the same file after adding rows (or after a partial failure): the rows already
    enrolled as they stand are reported and skipped, the new ones enrolled, exit 0."""
    floor = tmp_path / "floor.csv"
    floor.write_text("box,seat,agent,team\nbox-001,A-01,Priya,north\nbox-002,A-02,Rahul,north\n")
    first = cli("enroll-csv", "--site-dir", str(site_dir), str(floor))
    assert first.returncode == 0, first.stderr
    bundle_1 = Site(site_dir).bundle_path("box-001").read_bytes()
    with floor.open("a") as fh:
        fh.write("box-003,A-03,Sara,south\n")
    again = cli("enroll-csv", "--site-dir", str(site_dir), str(floor))
    assert again.returncode == 0, again.stdout + again.stderr
    out = again.stdout
    assert "bundles/box-003.json" in out and "bundles/box-001.json" not in out.split("already")[0]
    for line, box in ((2, "box-001"), (3, "box-002")):
        assert any(f"floor.csv:{line}" in row and box in row and "already enrolled" in row
                   for row in out.splitlines()), out
    assert "1 box(es) enrolled, 2 already enrolled" in out
    inv = Site(site_dir).inventory()
    assert sorted(inv.boxes) == ["box-001", "box-002", "box-003"]
    assert Site(site_dir).bundle_path("box-001").read_bytes() == bundle_1, "its key must not change"
    # the same single box again is also fine
    one = cli("enroll", "--site-dir", str(site_dir), "box-003", "--seat", "A-03")
    assert one.returncode == 0 and "box-003" in one.stdout and "already enrolled" in one.stdout


def test_a_csv_run_again_with_a_box_at_another_seat_is_refused(site_dir: Path,
                                                               tmp_path: Path) -> None:
    """Same box id, another seat: a real conflict, named by its line; nothing is written."""
    floor = tmp_path / "floor.csv"
    floor.write_text("box,seat\nbox-001,A-01\n")
    assert cli("enroll-csv", "--site-dir", str(site_dir), str(floor)).returncode == 0
    before = (site_dir / "inventory.json").read_bytes()
    floor.write_text("box,seat\nbox-004,A-04\nbox-001,A-09\n")
    done = cli("enroll-csv", "--site-dir", str(site_dir), str(floor))
    assert done.returncode == 2
    assert any("floor.csv:3" in row and "box-001" in row and "'A-01'" in row and "'A-09'" in row
               for row in done.stdout.splitlines()), done.stdout
    assert (site_dir / "inventory.json").read_bytes() == before
    assert not Site(site_dir).bundle_path("box-004").exists()


PUBLIC = {".", "ca", "ca/cert.pem", "broker", "broker/cert.pem", "acl", "crl.pem",
          "mosquitto.conf", "site.json", "dashboard.env"}
"""What others may read in a site folder: the broker's certificates and configuration (the broker
drops to its own user), nothing private."""


def _world_access(site_dir: Path) -> dict[str, str]:
    """Each file and folder under ``site_dir`` that others can reach and read or write (through
    folders they may traverse), with its mode in octal."""
    found = {}
    todo = [site_dir]
    while todo:
        path = todo.pop()
        mode = path.lstat().st_mode & 0o777
        if mode & 0o006:
            found[str(path.relative_to(site_dir))] = f"{mode:o}"
        if path.is_dir() and not path.is_symlink() and mode & 0o001:
            todo += path.iterdir()
    return found


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_keys_serials_and_the_inventory_are_private_whatever_the_umask(
        tmp_path: Path, umask: int) -> None:
    """The inventory (agents' names, certificate serials) and every key's folder are for root
    only, after enrolment, rotation and a restore, even from a script with a loose umask."""
    root = new_site_dir("miroir-modes-")
    site_dir, restored = root / "site", root / "restored"
    d = str(site_dir)
    floor = tmp_path / "floor.csv"
    floor.write_text("box,seat,agent\nbox-001,A-01,Priya\nbox-002,A-02,Rahul\n")
    passphrase = tmp_path / "pass"
    passphrase.write_text("correct horse\n")
    backup = str(tmp_path / "site.bak")
    try:
        for args in (("site-init", "--site-dir", d, "--site", SITE, "--broker-host", "broker.lan"),
                     ("enroll-csv", "--site-dir", d, str(floor)),
                     ("rotate", "--site-dir", d, "box-001"),
                     ("backup", "--site-dir", d, "--passphrase-file", str(passphrase), backup),
                     ("restore", "--site-dir", str(restored), "--passphrase-file",
                      str(passphrase), backup)):
            done = cli(*args, umask=umask)
            assert done.returncode == 0, (args, done.stderr)
        for where in (site_dir, restored):
            exposed = {path: mode for path, mode in _world_access(where).items()
                       if path not in PUBLIC or int(mode, 8) & 0o002}
            assert not exposed, (where, exposed)
            assert (where / "inventory.json").stat().st_mode & 0o777 == 0o600
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_certificates_ending_soon_are_listed_with_what_renews_them(site_dir: Path,
                                                                  tmp_path: Path) -> None:
    """A box's certificate 10 days from its end, one ended yesterday, the broker's 20 days and the
    dashboard's HTTPS one 25 days from their end are listed (soonest first, with the command for
    each); exit 1 for a cron job."""
    floor = tmp_path / "floor.csv"
    floor.write_text("box,seat\nbox-001,A-01\nbox-002,A-02\nbox-003,A-03\n")
    assert cli("enroll-csv", "--site-dir", str(site_dir), str(floor)).returncode == 0
    nothing = cli("expiry", "--site-dir", str(site_dir), "--days", "30")
    assert nothing.returncode == 0, nothing.stdout + nothing.stderr
    assert nothing.stdout.splitlines() == ["0 of 7 certificate(s) of site paris-1 end within 30 days"]
    site = Site(site_dir)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    pki.issue(site.ca, site.box_pair("box-002").cert.parent, "box-002", days=10)
    pki.issue(site.ca, site.box_pair("box-003").cert.parent, "box-003", days=29,
              not_before=past)
    pki.issue(site.ca, site.server.cert.parent, "broker.lan", server=True, hosts=["broker.lan"],
              days=20)
    pki.issue(site.ca, site_dir / "https", "dashboard", server=True, hosts=["192.0.2.5"],
              days=25)  # as docs/dashboard-tls.md makes it
    done = cli("expiry", "--site-dir", str(site_dir), "--days", "30")
    assert done.returncode == 1, done.stdout + done.stderr
    rows = done.stdout.splitlines()
    assert rows[0].startswith("4 of 8 certificate(s) of site paris-1 end within 30 days")
    assert rows[1].split()[:4] == ["EXPIRED", "-1.0", "days", "box"] and "box-003" in rows[1]
    assert f"miroir provision rotate --site-dir {site_dir} box-003" in rows[1]
    assert rows[2].split()[:5] == ["expires", "10.0", "days", "box", "box-002"]
    assert rows[3].split()[:4] == ["expires", "20.0", "days", "broker"]
    assert f"miroir provision renew --site-dir {site_dir}" in rows[3]
    assert rows[4].split()[:4] == ["expires", "25.0", "days", "https"] and "dashboard-tls" in rows[4]
    assert len(rows) == 5
    everything = cli("expiry", "--site-dir", str(site_dir), "--days", "5", "--all")
    assert everything.returncode == 1 and len(everything.stdout.splitlines()) == 9
    ended = cli("expiry", "--site-dir", str(site_dir), "--days", "1")
    assert ended.returncode == 1 and len(ended.stdout.splitlines()) == 2
    assert ended.stdout.splitlines()[1].startswith("EXPIRED")


@pytest.mark.parametrize("days", ["-2", "0"])
def test_a_window_of_no_days_is_refused_not_an_expired_certificate_hidden(site_dir: Path,
                                                                          days: str) -> None:
    """`expiry --days -2` (or 0) was accepted and exited 0 with a box's certificate ended the day
    before (it ended -1 days from now, not within -2): a window is 1 day or more, refused as the
    CLI's other ranges (exit 2), so an ended certificate always exits 1."""
    done = cli("expiry", "--site-dir", str(site_dir), "--days", days)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines()[-1] == (
        f"miroir provision expiry: error: argument --days: {days} is outside 1 or more")


def test_a_revoked_box_leaves_no_retained_status_on_the_broker(tmp_path: Path) -> None:
    """A revoked box's retained status stayed on the broker for good ("online": its Last Will is
    denied once it is revoked), so every subscriber, the dashboard after each restart, was told
    it was online. `revoke` clears it, as the box itself (the dashboard gets no new right)."""
    root = new_site_dir("miroir-revoke-")
    try:
        site = init_site(root / "site", SITE, broker_host="localhost", port=free_port(),
                         bind="127.0.0.1")
        site.enroll([Enrolment(box="box-001", seat="A-01"), Enrolment(box="box-002", seat="A-02")])
        broker = Mosquitto(site.config, site.port, site.log).start()
        pubs = []
        try:
            for box in ("box-001", "box-002"):
                pubs.append(box_publisher(site, box, tmp_path / box))
                pubs[-1].publish_status("online").wait_for_publish(5.0)
            done = cli("revoke", "box-001", "--site-dir", str(site.dir),
                       "--broker-pid", str(broker.pid))
            assert done.returncode == 0 and "revoked" in done.stdout, done.stderr
            dash = Peer(site.dashboard, site.ca.cert, dashboard_identity(SITE), site.port)
            assert not dash.connect().is_failure
            status = wire.topic(SITE, "box-002", "status").replace("box-002", "+")
            assert dash.subscribe(status) == 1
            dash.expect(wire.topic(SITE, "box-002", "status"))  # the retained burst has come
            time.sleep(0.5)
            retained = {t: p for t, p in dash.messages}
            dash.close()
            assert list(retained) == [wire.topic(SITE, "box-002", "status")], retained
            # and the box is refused as before: its connection cut, its reconnections refused
            assert not pubs[0].connected.is_set()
        finally:
            for pub in pubs:
                pub.stop()
            broker.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_box_revoked_after_the_backup_is_revoked_again_after_the_restore(
        tmp_path: Path) -> None:
    """A stolen box revoked after the last site backup got in again on the site restored from it
    (CONNACK Success, where the old site refused it), and neither `revoke` nor `restore` said so.
    `revoke` now says to back up again; `restore` says when the restored site was last changed
    and to revoke again every box revoked since, which shuts the box out again."""
    root = new_site_dir("miroir-revoked-")
    try:
        site = init_site(root / "old", SITE, broker_host="localhost", port=free_port(),
                         bind="127.0.0.1")
        site.enroll([Enrolment(box="box-001", seat="A-01")])
        stolen = pki.CertPair(tmp_path / "cert.pem", tmp_path / "key.pem")
        shutil.copy(site.box_pair("box-001").cert, stolen.cert)
        shutil.copy(site.box_pair("box-001").key, stolen.key)
        pw = tmp_path / "pw"
        pw.write_text("correct horse battery staple\n")
        backup = tmp_path / "site.bak"
        assert cli("backup", "--site-dir", str(site.dir), str(backup), "--passphrase-file",
                   str(pw)).returncode == 0
        as_of = dt.datetime.fromtimestamp((site.dir / "inventory.json").stat().st_mtime, dt.UTC)
        broker = Mosquitto(site.config, site.port, site.log).start()
        try:
            done = cli("revoke", "box-001", "--site-dir", str(site.dir),
                       "--broker-pid", str(broker.pid))
        finally:
            broker.stop()
        assert done.returncode == 0 and "miroir provision backup" in done.stdout, done.stdout
        shutil.rmtree(site.dir)  # the server dies
        done = cli("restore", str(backup), "--site-dir", str(root / "new"), "--passphrase-file",
                   str(pw))
        assert done.returncode == 0, done.stderr
        assert f"{as_of:%Y-%m-%d %H:%M} UTC" in done.stdout and "revoke again" in done.stdout, \
            done.stdout
        restored = Site(root / "new")
        broker = Mosquitto(restored.config, restored.port, restored.log).start()
        try:
            peer = Peer(stolen, restored.ca.cert, "box-001", restored.port)
            assert not peer.connect().is_failure  # in again, as the restore warns
            peer.close()
            assert cli("revoke", "box-001", "--site-dir", str(restored.dir), "--broker-pid",
                       str(broker.pid)).returncode == 0
            peer = Peer(stolen, restored.ca.cert, "box-001", restored.port)
            assert peer.connect() is None  # refused again
            peer.close()
        finally:
            broker.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_revocation_whose_broker_reload_fails_still_denies_the_box(site_dir: Path) -> None:
    """The broker cannot be reloaded (wrong pid): revoke fails, saying so, but the box is in the
    CRL and denied every topic in the ACL, which the broker's next start or reload reads."""
    assert cli("enroll", "--site-dir", str(site_dir), "box-001", "--seat", "A-01").returncode == 0
    dead = subprocess.Popen(["true"])  # a pid that no longer runs
    dead.wait()
    done = cli("revoke", "box-001", "--site-dir", str(site_dir), "--broker-pid", str(dead.pid))
    assert done.returncode == 2 and f"no broker process with pid {dead.pid}" in done.stderr
    # one line saying what is done and what to run (the pid mistyped: it said only the first part)
    assert done.stderr.splitlines()[-1] == (
        f"miroir: error: no broker process with pid {dead.pid}: box box-001 is revoked in the "
        "site's files, but the running broker has not read them; run `miroir provision revoke "
        f"--site-dir {site_dir} box-001 --broker-pid {dead.pid}` again once the broker can be "
        "reloaded (with another --broker-pid or --broker-unit if that one is not the broker's)")
    assert "user box-001\ntopic deny #" in Site(site_dir).acl.read_text()
    assert Site(site_dir).inventory().get("box-001").state == "revoked"



def test_a_revocation_list_cut_short_by_a_full_disk_leaves_the_old_one(tmp_path: Path) -> None:
    """The CRL was rewritten in place (opened with O_TRUNC, one unchecked write): `revoke` on a
    disk that took only the old CRL's 398 bytes left a CRL of 398 bytes, cut mid-PEM, which the
    broker refused at its next start (mosquitto exited with code 1), so every box was locked out.
    It is now written to a temporary file beside it and renamed over it: the write fails, the
    command says so (exit 2), the old CRL stays whole and the broker starts with it."""
    import resource

    root = new_site_dir("miroir-crl-")
    try:
        site = init_site(root / "site", SITE, broker_host="localhost", port=free_port(),
                         bind="127.0.0.1")
        site.enroll([Enrolment(box="box-001", seat="A-01")])
        before = site.crl.read_bytes()
        mode = site.crl.stat().st_mode & 0o777

        def disk_full() -> None:  # the files this process writes grow no larger than the old CRL
            resource.setrlimit(resource.RLIMIT_FSIZE, (len(before), len(before)))

        done = subprocess.run([sys.executable, "-m", "miroir", "provision", "revoke", "box-001",
                               "--site-dir", str(site.dir), "--no-kick", "--broker-pid", "1"],
                              capture_output=True, text=True, timeout=120, check=False,
                              preexec_fn=disk_full)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.splitlines()[-1] == "miroir: error: File too large", done.stderr
        assert site.crl.read_bytes() == before
        assert sorted(p.name for p in site.dir.iterdir() if p.name.startswith(".")) == \
            [".lock"], "a temporary file was left"
        broker = Mosquitto(site.config, site.port, site.log).start()  # it reads the CRL whole
        try:
            done = cli("revoke", "box-001", "--site-dir", str(site.dir), "--no-kick",
                       "--broker-pid", str(broker.pid))
            assert done.returncode == 0, done.stderr
        finally:
            broker.stop()
        serial = pki.load_cert(site.box_pair("box-001").cert).serial_number
        entries = [e.serial_number for e in pki.load_crl(site.crl)]
        assert serial in entries and len(entries) == 2, entries  # and revoke's check certificate
        assert site.crl.stat().st_mode & 0o777 == mode == 0o644  # the broker's user reads it
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_revocation_run_again_after_its_reload_failed_clears_the_retained_status(
        tmp_path: Path) -> None:
    """IT types the broker's pid wrong, revoke fails saying so, IT runs it again with the right
    one: the second run said "retained status cleared" while the box's "online" status stayed on
    the broker (the first run had already written the box's deny into the ACL, which the second
    run's first reload loaded before it cleared the status as the box, so the broker dropped it).
    The run again clears it as a first run does."""
    root = new_site_dir("miroir-revoke-again-")
    try:
        site = init_site(root / "site", SITE, broker_host="localhost", port=free_port(),
                         bind="127.0.0.1")
        site.enroll([Enrolment(box="box-001", seat="A-01"), Enrolment(box="box-002", seat="A-02")])
        broker = Mosquitto(site.config, site.port, site.log).start()
        pubs = []
        try:
            for box in ("box-001", "box-002"):
                pubs.append(box_publisher(site, box, tmp_path / box))
                pubs[-1].publish_status("online").wait_for_publish(5.0)
            dead = subprocess.Popen(["true"])  # a pid that no longer runs: a typo
            dead.wait()
            failed = cli("revoke", "box-001", "--site-dir", str(site.dir),
                         "--broker-pid", str(dead.pid))
            assert failed.returncode == 2, failed.stdout + failed.stderr
            done = cli("revoke", "box-001", "--site-dir", str(site.dir),
                       "--broker-pid", str(broker.pid))
            assert done.returncode == 0 and "retained status cleared" in done.stdout, done.stderr
            pubs[0].stop()
            dash = Peer(site.dashboard, site.ca.cert, dashboard_identity(SITE), site.port)
            assert not dash.connect().is_failure
            # box-001's retained status, if any, comes before the second subscription's
            assert dash.subscribe(wire.topic(SITE, "box-001", "status")) == 1
            assert dash.subscribe(wire.topic(SITE, "box-002", "status")) == 1
            dash.expect(wire.topic(SITE, "box-002", "status"))
            topics = dash.topics()
            dash.close()
            assert topics == [wire.topic(SITE, "box-002", "status")], topics
        finally:
            for pub in pubs:
                pub.stop()
            broker.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_box_revoked_twice_keeps_when_it_was_revoked_and_says_so() -> None:
    """Revoking a box already revoked (a second look at a stolen box, a run again after a failed
    reload) said "box box-001 revoked" as if new and wrote the time of the second run over the
    revocation's in the inventory: it says when the box was revoked and keeps that time (it
    still reloads the broker and cuts the box, which a failed first run may not have done)."""
    root = new_site_dir("miroir-revoke-twice-")
    try:
        site = init_site(root / "site", SITE, broker_host="localhost", port=free_port(),
                         bind="127.0.0.1")
        site.enroll([Enrolment(box="box-001", seat="A-01")])
        broker = Mosquitto(site.config, site.port, site.log).start()
        try:
            first = cli("revoke", "box-001", "--site-dir", str(site.dir), "--broker-pid",
                        str(broker.pid))
            assert first.returncode == 0, first.stderr
            when = site.inventory().get("box-001").revoked_ts
            assert when is not None
            again = cli("revoke", "box-001", "--site-dir", str(site.dir), "--broker-pid",
                        str(broker.pid))
        finally:
            broker.stop()
        assert again.returncode == 0, again.stderr
        day = dt.datetime.fromtimestamp(when, dt.UTC)
        assert again.stdout.startswith(
            f"box box-001 was already revoked on {day:%Y-%m-%d %H:%M} UTC, revoked again "
            "(serials "), again.stdout
        assert "live connection cut, retained status cleared" in again.stdout, again.stdout
        assert site.inventory().get("box-001").revoked_ts == when
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_rotation_finish_whose_broker_reload_fails_says_what_to_run(site_dir: Path) -> None:
    """`rotate --finish` whose reload fails (a wrong pid) said only "no broker process with pid
    N": it says the old certificate is revoked in the site's files, not yet by the broker, and to
    run the same command again (which revokes, reloads and cuts again)."""
    assert cli("enroll", "--site-dir", str(site_dir), "box-001", "--seat", "A-01").returncode == 0
    assert cli("rotate", "--site-dir", str(site_dir), "box-001").returncode == 0
    dead = subprocess.Popen(["true"])
    dead.wait()
    done = cli("rotate", "box-001", "--finish", "--site-dir", str(site_dir),
               "--broker-pid", str(dead.pid))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"miroir: error: no broker process with pid {dead.pid}: box box-001's old certificate(s) "
        "are revoked in the site's files, but the running broker has not read them; run "
        f"`miroir provision rotate --site-dir {site_dir} box-001 --finish --broker-pid {dead.pid}` "
        "again once the broker can be reloaded (with another --broker-pid or --broker-unit if "
        "that one is not the broker's)")


def _files(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` (but the lock) with its content, to show nothing changed."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_a_rotation_run_again_before_its_finish_does_not_cut_off_the_box(tmp_path: Path) -> None:
    """IT rotates box-001, puts the new bundle on the box, then runs `rotate box-001` again (a
    step run twice): it made a third certificate, and `--finish` revoked the one the box had just
    been given, so the box could no longer connect at all (CONNACK never came) until someone took
    it the newest bundle. The second `rotate` is refused, saying what to run, and nothing changes;
    the finish then leaves the box its bundle; `--again` makes another on purpose."""
    from provisioning.bundle import install_bundle

    root = new_site_dir("miroir-rotate-again-")
    try:
        site = init_site(root / "site", SITE, broker_host="localhost", port=free_port(),
                         bind="127.0.0.1")
        site.enroll([Enrolment(box="box-001", seat="A-01")])
        assert cli("rotate", "box-001", "--site-dir", str(site.dir)).returncode == 0
        install_bundle(site.bundle_path("box-001"), tmp_path / "box")  # on the box now
        creds = tmp_path / "box" / "credentials"
        given = pki.CertPair(creds / "box.pem", creds / "box.key")
        before = _files(site.dir)
        again = cli("rotate", "box-001", "--site-dir", str(site.dir))
        assert again.returncode == 2, again.stdout + again.stderr
        assert again.stderr.splitlines()[-1].startswith(
            f"miroir: error: box box-001 already has a new certificate waiting, in "
            f"{site.bundle_path('box-001')}: put that bundle on the box, then run "
            f"`miroir provision rotate --site-dir {site.dir} box-001 --finish` (nothing changed)"
        ), again.stderr
        assert _files(site.dir) == before
        broker = Mosquitto(site.config, site.port, site.log).start()
        try:
            done = cli("rotate", "box-001", "--finish", "--site-dir", str(site.dir),
                       "--broker-pid", str(broker.pid))
            assert done.returncode == 0 and "retired 1 old certificate" in done.stdout, done.stderr
            peer = Peer(given, site.ca.cert, "box-001", site.port)
            assert not peer.connect().is_failure  # the box keeps the bundle it was given
            peer.close()
        finally:
            broker.stop()
        assert cli("rotate", "box-001", "--site-dir", str(site.dir)).returncode == 0
        on_purpose = cli("rotate", "box-001", "--again", "--site-dir", str(site.dir))
        assert on_purpose.returncode == 0, on_purpose.stderr
        assert len(site.inventory().get("box-001").previous_serials) == 2
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _broker_lines(site: Site, box: str) -> list[str]:
    """The broker's log lines about ``box``'s connections so far."""
    return [line for line in site.log.read_text().splitlines() if f" {box}" in line]


def test_a_rotation_finished_twice_leaves_the_box_connected(tmp_path: Path) -> None:
    """`rotate box-001 --finish` run a second time (a script run again, a retry after a timeout)
    said "retired 1 old certificate(s)" again, rewrote the revocation list and cut the box's good
    connection (it reconnected 1 s later). With no rotation waiting for its finish, it now says
    so in one line, exit 0 as `enroll-csv`'s and `retire`'s runs again, and changes nothing; a
    finish whose reload failed still does it all when run again."""
    root = new_site_dir("miroir-finish-twice-")
    try:
        site = init_site(root / "site", SITE, broker_host="localhost", port=free_port(),
                         bind="127.0.0.1")
        site.enroll([Enrolment(box="box-001", seat="A-01")])
        assert cli("rotate", "box-001", "--site-dir", str(site.dir)).returncode == 0
        dead = subprocess.Popen(["true"])  # a pid that no longer runs: the first finish fails
        dead.wait()
        failed = cli("rotate", "box-001", "--finish", "--site-dir", str(site.dir),
                     "--broker-pid", str(dead.pid))
        assert failed.returncode == 2, failed.stdout + failed.stderr
        broker = Mosquitto(site.config, site.port, site.log).start()
        pub = None
        try:
            pub = box_publisher(site, "box-001", tmp_path / "box")  # the new bundle
            done = cli("rotate", "box-001", "--finish", "--site-dir", str(site.dir),
                       "--broker-pid", str(broker.pid))
            assert done.returncode == 0, done.stderr
            assert done.stdout == "box box-001: retired 1 old certificate(s)\n", done.stdout
            wait_until(pub.connected.is_set, "the box back after the finish's cut")
            seen = _broker_lines(site, "box-001")
            before = {k: v for k, v in _files(site.dir).items()
                      if not k.startswith(("persist", "mosquitto.log"))}
            again = cli("rotate", "box-001", "--finish", "--site-dir", str(site.dir),
                        "--broker-pid", str(broker.pid))
            assert again.returncode == 0, again.stderr
            assert again.stdout == "box box-001: no rotation waits for its finish; nothing " \
                "changed\n", again.stdout
            assert {k: v for k, v in _files(site.dir).items()
                    if not k.startswith(("persist", "mosquitto.log"))} == before
            assert _broker_lines(site, "box-001") == seen  # not cut, no one connected as it
            assert pub.connected.is_set()
        finally:
            if pub is not None:
                pub.stop()
            broker.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_revocation_the_broker_did_not_read_fails_saying_so(
        tmp_path: Path, other: subprocess.Popen[bytes]) -> None:
    """`revoke --broker-pid` given a live process that is not the broker (a stale pid, another
    program's) said "broker reloaded; live connection cut", exit 0, while the broker still let
    the revoked certificate in (CONNACK Success): the cut box was back within a second. After the
    reload, `revoke` now tries a certificate revoked with the box's on the broker until it is
    refused (0.06 s measured: the try made at once is let in 9 times out of 10, the reload read a
    moment after the signal) and says how long that took; still let in after 5 s, it fails saying
    so and what to run (exit 2), without cutting the box for nothing."""
    import re

    root = new_site_dir("miroir-revoke-unread-")
    try:
        site = init_site(root / "site", SITE, broker_host="localhost", port=free_port(),
                         bind="127.0.0.1")
        site.enroll([Enrolment(box="box-001", seat="A-01"), Enrolment(box="box-002", seat="A-02")])
        stolen = site.box_pair("box-001")
        broker = Mosquitto(site.config, site.port, site.log).start()
        pub = None
        try:
            pub = box_publisher(site, "box-001", tmp_path / "box")
            seen = _broker_lines(site, "box-001")
            for extra in ((), ("--no-kick",)):
                done = cli("revoke", "box-001", "--site-dir", str(site.dir), "--broker-pid",
                           str(other.pid), *extra)
                assert done.returncode == 2, done.stdout + done.stderr
                assert done.stderr.splitlines()[-1] == (
                    f"miroir: error: the broker at localhost:{site.port} still let box box-001's "
                    f"revoked certificate in 5 s after its reload (its log, {site.log}, says "
                    "whether it reloaded): box box-001 is revoked in the site's files, but the "
                    "running broker has not read them; run `miroir provision revoke --site-dir "
                    f"{site.dir} box-001 --broker-pid {other.pid}` again once the broker can be "
                    "reloaded (with another --broker-pid or --broker-unit if that one is not the "
                    "broker's)"), done.stderr
                assert pub.connected.is_set()
            assert _broker_lines(site, "box-001") == seen  # its connection was not cut for nothing
            done = cli("revoke", "box-001", "--site-dir", str(site.dir), "--broker-pid",
                       str(broker.pid))
            assert done.returncode == 0, done.stderr
            took = re.search(r"; broker reloaded, the revoked certificate refused ([0-9.]+) s "
                             r"after; live connection cut", done.stdout)
            assert took is not None, done.stdout
            print(f"revoked certificate refused {float(took.group(1)):.2f} s after the reload")
            peer = Peer(stolen, site.ca.cert, "box-001", site.port)
            assert peer.connect() is None  # refused: no CONNACK
            peer.close()
        finally:
            if pub is not None:
                pub.stop()
            broker.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_revocation_check_closed_for_another_reason_is_not_taken_for_a_refusal(
        tmp_path: Path, other: subprocess.Popen[bytes]) -> None:
    """The check after `revoke`'s reload counted any connection closed before its CONNACK as the
    broker refusing the revoked certificate: a broker at its max_connections ("denied:
    max_connections exceeded" in its log) that had not read the revocation list (a --broker-pid
    not the broker's) made `revoke` say "the revoked certificate refused 0.02 s after", exit 0,
    while the broker still let that certificate in. Only the broker's TLS alert "certificate
    revoked" now counts as refused; other closes are no answer, and after 5 s `revoke` fails
    saying it could not ask (exit 2), without cutting anything, and that whether the broker read
    the revocation could not be confirmed (it said "has not read them", which a full broker that
    had read them belied)."""

    root = new_site_dir("miroir-revoke-full-")
    try:
        site = init_site(root / "site", SITE, broker_host="localhost", port=free_port(),
                         bind="127.0.0.1")
        site.enroll([Enrolment(box="box-001", seat="A-01"), Enrolment(box="box-002", seat="A-02")])
        revoked = site.box_pair("box-002")
        with open(site.config, "a") as fh:  # applies to the config's only listener, the last
            fh.write("max_connections 1\n")
        broker = Mosquitto(site.config, site.port, site.log).start()
        pub = None
        try:
            pub = box_publisher(site, "box-001", tmp_path / "box")  # the one connection allowed
            done = cli("revoke", "box-002", "--site-dir", str(site.dir), "--broker-pid",
                       str(other.pid))
            log = site.log.read_text()  # whole, on failure: one run under load saw the check let in
            assert "denied: max_connections exceeded" in log, log
            assert done.returncode == 2, done.stdout + done.stderr
            last = done.stderr.splitlines()[-1]
            assert last.startswith(
                f"miroir: error: the broker at localhost:{site.port} could not be asked about "
                "box box-002's revoked certificate ("), last
            assert last.endswith(
                f") 5 s after its reload (its log, {site.log}, says whether it reloaded): box "
                "box-002 is revoked in the site's files, but whether the running broker has "
                f"read them could not be confirmed; run `miroir provision revoke --site-dir "
                f"{site.dir} box-002 --broker-pid {other.pid}` again once the broker can be "
                "reloaded (with another --broker-pid or --broker-unit if that one is not the "
                "broker's)"), last
            assert pub.connected.is_set()
            pub.stop()
            pub = None
            wait_until(lambda: "Client box-001 disconnected" in site.log.read_text(),
                       "box-001's connection closed")
            peer = Peer(revoked, site.ca.cert, "box-002", site.port)
            assert peer.connect() == 0  # a slot free: the unread revocation lets it in
            peer.close()
        finally:
            if pub is not None:
                pub.stop()
            broker.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_rotation_finish_the_broker_did_not_read_fails_saying_so(
        tmp_path: Path, other: subprocess.Popen[bytes]) -> None:
    """`rotate --finish --broker-pid` given a live process that is not the broker said "retired
    1 old certificate(s)", exit 0, while the broker still let the old certificate in (CONNACK
    Success): its key in other hands kept working. The finish now waits, as `revoke` does, until
    the broker refuses a certificate revoked with the old ones; still let in after 5 s it fails
    saying so (exit 2), and its run again with the broker's pid does it all."""

    root = new_site_dir("miroir-finish-unread-")
    try:
        site = init_site(root / "site", SITE, broker_host="localhost", port=free_port(),
                         bind="127.0.0.1")
        site.enroll([Enrolment(box="box-001", seat="A-01")])
        old = pki.CertPair(tmp_path / "old.pem", tmp_path / "old.key")
        shutil.copy(site.box_pair("box-001").cert, old.cert)
        shutil.copy(site.box_pair("box-001").key, old.key)
        assert cli("rotate", "box-001", "--site-dir", str(site.dir)).returncode == 0
        broker = Mosquitto(site.config, site.port, site.log).start()
        try:
            done = cli("rotate", "box-001", "--finish", "--site-dir", str(site.dir),
                       "--broker-pid", str(other.pid))
            assert done.returncode == 2, done.stdout + done.stderr
            assert done.stderr.splitlines()[-1] == (
                f"miroir: error: the broker at localhost:{site.port} still let box box-001's "
                f"old certificate(s) in 5 s after its reload (its log, {site.log}, says "
                "whether it reloaded): box box-001's old certificate(s) are revoked in the "
                "site's files, but the running broker has not read them; run `miroir provision "
                f"rotate --site-dir {site.dir} box-001 --finish --broker-pid {other.pid}` again "
                "once the broker can be reloaded (with another --broker-pid or --broker-unit if "
                "that one is not the broker's)"), done.stderr
            done = cli("rotate", "box-001", "--finish", "--site-dir", str(site.dir),
                       "--broker-pid", str(broker.pid))
            assert done.returncode == 0, done.stderr
            assert done.stdout == "box box-001: retired 1 old certificate(s)\n", done.stdout
            peer = Peer(old, site.ca.cert, "box-001", site.port)
            assert peer.connect() is None  # refused: no CONNACK
            peer.close()
        finally:
            broker.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_rotation_finish_whose_cut_fails_says_so_as_revoke_does(tmp_path: Path) -> None:
    """`rotate --finish` cuts a connection still made with the old key (its kick: a takeover of
    the box's session), and said "retired 1 old certificate(s)" when that cut failed: over the
    real broker, its kick refused (a client id rule the reload read), the connection made with
    the old key stayed open and nothing said so. `revoke` so refused says "live connection not
    cut (...)", exit 0; the finish now says the same, with the same exit code. Both name what the
    broker did (it refused the cut's connection, not "broker unreachable?" as they said)."""
    root = new_site_dir("miroir-finish-uncut-")
    try:
        site = init_site(root / "site", SITE, broker_host="localhost", port=free_port(),
                         bind="127.0.0.1")
        site.enroll([Enrolment(box="box-001", seat="A-01"), Enrolment(box="box-002", seat="A-02")])
        old = pki.CertPair(tmp_path / "old.pem", tmp_path / "old.key")
        shutil.copy(site.box_pair("box-001").cert, old.cert)
        shutil.copy(site.box_pair("box-001").key, old.key)
        assert cli("rotate", "box-001", "--site-dir", str(site.dir)).returncode == 0
        broker = Mosquitto(site.config, site.port, site.log).start()
        peer = Peer(old, site.ca.cert, "box-001", site.port)  # the old key in other hands
        try:
            rc = peer.connect()
            assert rc is not None and not rc.is_failure
            # from the next reload on, the broker takes no client id but the check's: every
            # kick (a connection as the box) is refused, the check's certificate by the CRL only
            site.config.write_text("clientid_prefixes check_\n" + site.config.read_text())
            done = cli("revoke", "box-002", "--site-dir", str(site.dir), "--broker-pid",
                       str(broker.pid))
            assert done.returncode == 0, done.stderr
            assert ("; live connection not cut (the broker refused the connection that cuts it: "
                    "Not authorized), ") in done.stdout, done.stdout
            done = cli("rotate", "box-001", "--finish", "--site-dir", str(site.dir),
                       "--broker-pid", str(broker.pid))
            assert done.returncode == 0, done.stderr
            assert done.stdout == ("box box-001: retired 1 old certificate(s); live connection "
                                   "not cut (the broker refused the connection that cuts it: "
                                   "Not authorized)\n"), done.stdout
            assert not peer.disconnected  # it was not cut indeed
            assert "Client <unknown> disconnected, not authorised." in site.log.read_text()
        finally:
            peer.close()
            broker.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize(("name", "text"), [
    ("excel-utf8", "\ufeffbox,seat,agent,team\r\nbox-001,A-01,Priya,north\r\nbox-002,A-02,Rahul,"
                   "north\r\n"),
    ("capitals", "Box,Seat,Agent,Team\nbox-001,A-01,Priya,north\nbox-002,A-02,Rahul,north\n"),
    ("spaces", "box, seat, agent, team\nbox-001, A-01, Priya, north\nbox-002, A-02, Rahul, north\n"),
    ("deleted-columns", "box,seat,agent,team,,\r\nbox-001,A-01,Priya,north,,\r\nbox-002,A-02,Rahul,"
                        "north,,\r\n")],
    ids=["excel-utf8", "capitals", "spaces", "deleted-columns"])
def test_the_dashboard_imports_the_floor_file_enrolment_took(
        site_dir: Path, tmp_path: Path, name: str, text: str) -> None:
    """Section 2: enrol a floor from a CSV file, then give the dashboard "the same file". A file
    saved by Excel as "CSV UTF-8" (a byte order mark first), with capitals in its header or a
    space after each comma, was enrolled, then refused by `miroir dashboard import` ("floor.csv:
    'box'"), or, with the spaces, "imported 2 seats" with every seat label, agent and team left
    out. The dashboard now reads the file as the enrolment does. And the other way: Excel writes
    the commas of deleted columns (`box,seat,agent,team,,`), which the dashboard imported and
    enroll-csv refused ("header must name the columns ..."): empty names at the end of the
    header, over empty cells, are taken by both."""
    import sqlite3

    floor = tmp_path / "floor.csv"
    floor.write_bytes(text.encode("utf-8"))
    assert cli("enroll-csv", "--site-dir", str(site_dir), str(floor)).returncode == 0
    env = {**os.environ, "MIROIR_DASH_SITE": SITE,
           "MIROIR_DASH_DB_PATH": str(tmp_path / "dashboard.sqlite")}
    done = subprocess.run([sys.executable, "-m", "miroir", "dashboard", "import", str(floor)],
                          capture_output=True, text=True, timeout=120, check=False, env=env)
    assert done.returncode == 0 and "imported 2 seats" in done.stdout, done.stdout + done.stderr
    with sqlite3.connect(tmp_path / "dashboard.sqlite") as db:
        seats = db.execute("SELECT box, label, agent FROM seats ORDER BY box").fetchall()
        teams = db.execute("SELECT agent, team FROM agents ORDER BY agent").fetchall()
    assert seats == [("box-001", "A-01", "Priya"), ("box-002", "A-02", "Rahul")]
    assert teams == [("Priya", "north"), ("Rahul", "north")]



def test_a_seat_typed_with_spaces_is_the_seat_the_floor_file_names(site_dir: Path,
                                                                   tmp_path: Path) -> None:
    """`enroll box-001 --seat " A-01"` kept the spaces, which enroll-csv strips from each cell:
    the CSV's box-002 at "A-01" was then enrolled too, two boxes at one seat. The command line's
    values are stripped as the file's are, so the seat is taken; a value under an unnamed column,
    or a name missing inside the header, is still refused."""
    done = cli("enroll", "--site-dir", str(site_dir), "box-001", "--seat", " A-01",
               "--agent", "Priya ", "--team", " north")
    assert done.returncode == 0, done.stderr
    rec = Site(site_dir).inventory().get("box-001")
    assert (rec.seat, rec.agent, rec.team) == ("A-01", "Priya", "north")
    floor = tmp_path / "floor.csv"
    for text, said in (("box,seat\nbox-002,A-01\n", "seat 'A-01' is already taken by box 'box-001'"),
                       ("box,seat,,\nbox-002,A-02,x,\n", "4 fields, expected 2"),
                       ("box,,seat\nbox-002,,A-02\n", "header must name the columns")):
        floor.write_text(text)
        done = cli("enroll-csv", "--site-dir", str(site_dir), str(floor))
        assert done.returncode == 2 and said in done.stdout, (text, done.stdout)
    assert sorted(Site(site_dir).inventory().boxes) == ["box-001"]


def test_a_floor_file_separated_by_semicolons_says_how_to_save_it(site_dir: Path,
                                                                  tmp_path: Path) -> None:
    """French Excel's plain "CSV" separates with ';': enroll-csv answered "header must name the
    columns box, seat, agent, team ...; got box;seat;agent;team", which named no way out. Both
    readers of the floor file (enrolment, the dashboard's import) now say what it is and how to
    save it, and nothing is written."""
    floor = tmp_path / "floor.csv"
    floor.write_text("box;seat;agent;team\nbox-001;A-01;Léa;nord\n", encoding="utf-8")
    before = (site_dir / "inventory.json").read_bytes()
    done = cli("enroll-csv", "--site-dir", str(site_dir), str(floor))
    assert done.returncode == 2
    assert done.stdout == (f"error: {floor}:1: the columns are separated by ';', not ',': save "
                           "the file from Excel as \"CSV UTF-8 (délimité par des virgules)\", then "
                           "run the command again\n"), done.stdout
    assert (site_dir / "inventory.json").read_bytes() == before
    env = {**os.environ, "MIROIR_DASH_SITE": SITE,
           "MIROIR_DASH_DB_PATH": str(tmp_path / "dashboard.sqlite")}
    imported = subprocess.run([sys.executable, "-m", "miroir", "dashboard", "import", str(floor)],
                              capture_output=True, text=True, timeout=120, check=False, env=env)
    assert imported.returncode == 2
    assert imported.stderr.splitlines()[-1] == (
        f"miroir: error: {floor}: the columns are separated by ';', not ',': save the file from "
        "Excel as \"CSV UTF-8 (délimité par des virgules)\"; nothing imported")


def test_a_renewal_whose_broker_reload_fails_says_what_to_run(site_dir: Path) -> None:
    """`renew` whose reload fails (a wrong pid) said only "no broker process with pid N", while
    the new certificates were already in place on disk: it says so and what to run."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    done = cli("renew", "--site-dir", str(site_dir), "--broker-pid", str(dead.pid))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"miroir: error: no broker process with pid {dead.pid}: the broker's and the dashboard's "
        "new certificates are in the site's files, but the running broker has not read them; run "
        f"`miroir provision renew --site-dir {site_dir} --broker-pid {dead.pid}` again once the "
        "broker can be reloaded (with another --broker-pid or --broker-unit if that one is not the "
        "broker's)")


def test_a_renewal_the_broker_did_not_read_fails_saying_so(
        tmp_path: Path, other: subprocess.Popen[bytes]) -> None:
    """`renew --broker-pid` given a live process that is not the broker said "broker
    certificate renewed ... (broker reloaded)", exit 0, while the broker went on serving its old
    certificate, which ends on its date and then locks every box out. `renew` now waits until the
    broker serves the new one (a TLS handshake, no MQTT session); still the old one after 5 s, it
    fails saying so and what to run (exit 2)."""
    import socket
    import ssl

    root = new_site_dir("miroir-renew-unread-")
    try:
        site = init_site(root / "site", SITE, broker_host="localhost", port=free_port(),
                         bind="127.0.0.1")

        def served() -> int:
            ctx = ssl.create_default_context(cafile=str(site.ca.cert))
            ctx.load_cert_chain(str(site.dashboard.cert), str(site.dashboard.key))
            with socket.create_connection(("127.0.0.1", site.port)) as raw, \
                    ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                der = tls.getpeercert(True)
            assert der is not None
            return pki.x509.load_der_x509_certificate(der).serial_number

        broker = Mosquitto(site.config, site.port, site.log).start()
        try:
            old = served()
            done = cli("renew", "--site-dir", str(site.dir), "--broker-pid", str(other.pid))
            assert done.returncode == 2, done.stdout + done.stderr
            assert done.stderr.splitlines()[-1] == (
                f"miroir: error: the broker at localhost:{site.port} still served its old "
                f"certificate 5 s after its reload (its log, {site.log}, says whether it "
                "reloaded): the broker's and the dashboard's new certificates are in the site's "
                "files, but the running broker has not read them; run `miroir provision renew "
                f"--site-dir {site.dir} --broker-pid {other.pid}` again once the broker can be "
                "reloaded (with another --broker-pid or --broker-unit if that one is not the "
                "broker's)"), done.stderr
            assert served() == old
            done = cli("renew", "--site-dir", str(site.dir), "--broker-pid", str(broker.pid))
            assert done.returncode == 0 and "(broker reloaded, serving it)" in done.stdout, \
                done.stderr
            assert served() == pki.load_cert(site.server.cert).serial_number != old
        finally:
            broker.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_revocation_whose_systemctl_reload_fails_is_one_line(site_dir: Path) -> None:
    """`systemctl reload` failing with two lines of its own (here: "System has not been booted
    with systemd ...", "Failed to connect to bus ...") made revoke's error two lines, the second
    starting with systemctl's words: the error is one line, systemctl's joined by "; "."""
    assert cli("enroll", "--site-dir", str(site_dir), "box-001", "--seat", "A-01").returncode == 0
    done = cli("revoke", "box-001", "--site-dir", str(site_dir), "--broker-unit",
               "miroir-no-such-unit.service")
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if " INFO " not in line]
    assert len(errors) == 1 and errors[0].startswith(
        "miroir: error: systemctl reload miroir-no-such-unit.service failed: "), errors
    assert errors[0].endswith(
        f"run `miroir provision revoke --site-dir {site_dir} box-001 --broker-unit "
        "miroir-no-such-unit.service` again once the broker can be reloaded (with another "
        "--broker-pid or --broker-unit if that one is not the broker's)"), errors


def test_a_backup_written_into_the_site_folder_is_refused(site_dir: Path, tmp_path: Path) -> None:
    """`miroir provision backup paris-1-$(date +%F).bak` typed in /var/lib/miroir-site wrote the
    backup into the site folder, and the next backup held it: with a dated name each one held all
    the ones before (87, 174, 349 kB on three days, doubling). Such a backup file is refused in
    one line saying where to write it, and nothing is written."""
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery staple\n")
    for out, cwd in ((str(site_dir / "paris-1.bak"), None), ("paris-1.bak", site_dir),
                     ("../site/bundles/x.bak", site_dir)):
        done = subprocess.run([sys.executable, "-m", "miroir", "provision", "backup",
                               "--site-dir", str(site_dir), out, "--passphrase-file", str(pw)],
                              capture_output=True, text=True, timeout=120, check=False, cwd=cwd,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert done.returncode == 2, (out, done.stdout, done.stderr)
        assert done.stderr.splitlines()[-1].startswith("miroir: error: the backup file "), \
            done.stderr
        assert "is inside the site folder" in done.stderr and "off this server" in done.stderr
        assert not list(site_dir.rglob("*.bak"))
    assert cli("backup", "--site-dir", str(site_dir), str(tmp_path / "paris-1.bak"),
               "--passphrase-file", str(pw)).returncode == 0


def test_a_cut_the_broker_closes_says_so_rather_than_unreachable(tmp_path: Path) -> None:
    """The cut (the takeover of a box's session) refused at the broker's max_connections ("denied:
    max_connections exceeded" in its log) was said "live connection not cut (broker
    unreachable?)" by revoke and rotate --finish, while the broker had been reached and had closed
    the connection. The cut now says what is known: the broker closed its connection (its log
    says why), and "could not be reached" only when nothing answered at its port."""
    root = new_site_dir("miroir-kick-full-")
    try:
        site = init_site(root / "site", SITE, broker_host="localhost", port=free_port(),
                         bind="127.0.0.1")
        site.enroll([Enrolment(box="box-001", seat="A-01"), Enrolment(box="box-002", seat="A-02")])
        with open(site.config, "a") as fh:  # applies to the config's only listener, the last
            fh.write("max_connections 1\n")
        broker = Mosquitto(site.config, site.port, site.log).start()
        pub = None
        try:
            pub = box_publisher(site, "box-001", tmp_path / "box")  # the one connection allowed
            cut = site.kick("box-002")
            assert "denied: max_connections exceeded" in site.log.read_text()
            assert not cut.done
            assert cut.why.startswith("the broker closed the connection that cuts it: "), cut
            assert cut.why.endswith(f"; its log, {site.log}, says why"), cut
            assert "unreachable" not in cut.why and "reached" not in cut.why, cut
        finally:
            if pub is not None:
                pub.stop()
            broker.stop()
        cut = site.kick("box-002")  # nothing listens at the port now
        assert not cut.done
        assert cut.why.startswith(
            f"the broker could not be reached at localhost:{site.port}: "), cut
    finally:
        shutil.rmtree(root, ignore_errors=True)

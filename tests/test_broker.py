"""The site broker for real: Mosquitto 2.0, the generated config, TLS client certificates, ACL."""

from __future__ import annotations

import datetime as dt
import grp
import ipaddress
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from miroir import wire
from provisioning import pki
from provisioning.broker import (
    BROKER_USER,
    BrokerError,
    Mosquitto,
    SiteFiles,
    dashboard_identity,
    free_port,
    make_site,
    new_site_dir,
    write_config,
)
from tests._fixtures_broker import SITE_ID, Peer, ends_with_wait_lock_held, refused, wait_until

NOT_AUTHORIZED = 135


def metrics(box: str, seq: int) -> bytes:
    """A valid metrics payload of ``box``."""
    return wire.encode(
        "metrics",
        {
            "v": wire.SCHEMA_VERSION,
            "site": SITE_ID,
            "box": box,
            "ts": time.time(),
            "seq": seq,
            "near_speech_ratio": 0.5,
            "far_speech_ratio": 0.25,
            "talk_state": "agent",
        },
    )


def log_says(site: SiteFiles, text: str) -> None:
    """Wait until the broker's log holds ``text`` (its reason for a refusal)."""
    wait_until(lambda: text in site.log.read_text(), f"{text!r} in the broker log")


def test_box_metrics_reach_dashboard(site: SiteFiles, peer: Callable[..., Peer]) -> None:
    dash = peer(site.dashboard, "dashboard")
    assert dash.subscribe(f"miroir/v1/{SITE_ID}/+/+").value == 1  # granted QoS 1
    box = peer(site.box("box-a"), "box-a")
    topic = wire.topic(SITE_ID, "box-a", "metrics")
    rc = box.publish(topic, metrics("box-a", 1))
    assert rc.value == 0
    got = wire.decode("metrics", dash.expect(topic))
    assert (got["box"], got["seq"]) == ("box-a", 1)


def test_no_client_certificate_is_refused(site: SiteFiles, broker: Mosquitto) -> None:
    assert refused(None, site.ca_cert, broker.port)
    log_says(site, "peer did not return a certificate")
    # Plain MQTT on the only listener: the broker expects TLS and never answers a CONNACK.
    connect = bytes.fromhex("101000044d5154540502003c000003616e6f")  # v5 CONNECT, id "ano"
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
        sock.sendall(connect)
        try:
            reply = sock.recv(16)
        except (ConnectionResetError, TimeoutError):
            reply = b""
    assert not reply.startswith(b"\x20"), f"plain connection got a CONNACK: {reply!r}"


def test_config_has_only_a_tls_listener(site: SiteFiles) -> None:
    directives = [ln for ln in site.config.read_text().splitlines() if ln and ln[0] != "#"]
    listeners = [d for d in directives if d.startswith("listener")]
    assert listeners == [f"listener {site.port} 127.0.0.1"]
    for expected in ("allow_anonymous false", "require_certificate true",
                     "use_identity_as_username true", "tls_version tlsv1.2", "persistence true"):
        assert expected in directives
    lines = site.config.read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert lines[i - 1].startswith("# "), f"directive without comment: {line}"


def test_certificate_from_another_ca_is_refused(site: SiteFiles, broker: Mosquitto) -> None:
    other = new_site_dir()
    try:
        rogue_ca = pki.create_ca(other / "ca", SITE_ID)
        rogue = pki.issue(rogue_ca, other / "box-a", "box-a")  # same CN as a real box
        assert refused(rogue, site.ca_cert, broker.port)
        log_says(site, "certificate verify failed")
    finally:
        shutil.rmtree(other)


def test_expired_certificate_is_refused(site: SiteFiles, broker: Mosquitto) -> None:
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    expired = pki.issue(site.ca, site.dir / "expired", "box-a", not_before=long_ago, days=1)
    assert pki.load_cert(expired.cert).not_valid_after_utc < dt.datetime.now(dt.UTC)
    assert refused(expired, site.ca_cert, broker.port)
    log_says(site, "certificate verify failed")


def test_revoked_certificate_is_refused(site: SiteFiles) -> None:
    crl = pki.revoke(site.ca, site.dir / "crl.pem", [site.box("box-b").cert])
    write_config(site.dir, port=site.port, ca=site.ca, server=site.server, acl=site.acl, crl=crl)
    with site.broker() as broker:
        assert refused(site.box("box-b"), site.ca_cert, broker.port, "box-b")
        log_says(site, "certificate verify failed")
        ok = Peer(site.box("box-a"), site.ca_cert, "box-a", broker.port)
        try:
            assert not ok.connect().is_failure
        finally:
            ok.close()


def test_box_cannot_publish_on_another_box_topic(
    site: SiteFiles, peer: Callable[..., Peer]
) -> None:
    dash = peer(site.dashboard, "dashboard")
    dash.subscribe(f"miroir/v1/{SITE_ID}/+/+")
    box_a = peer(site.box("box-a"), "box-a")
    forged = wire.topic(SITE_ID, "box-b", "metrics")
    rc = box_a.publish(forged, metrics("box-b", 1))
    assert rc.value == NOT_AUTHORIZED, rc
    # Barrier: a later allowed message arrives, so the forged one would have arrived before it.
    own = wire.topic(SITE_ID, "box-a", "metrics")
    assert box_a.publish(own, metrics("box-a", 1)).value == 0
    dash.expect(own)
    assert forged not in dash.topics()


def test_no_client_can_take_over_another_clients_session(
    site: SiteFiles, peer: Callable[..., Peer]
) -> None:
    """A box connecting with another box's or the dashboard's client id does not disconnect it,
    fire its Last Will or wipe its session: the broker names every client after its certificate
    (before, box-b connecting as box-a closed box-a's connection and published its will)."""
    dash = peer(site.dashboard, "dashboard")
    dash.subscribe(f"miroir/v1/{SITE_ID}/+/+")
    box_a = peer(site.box("box-a"), "box-a")
    box_b = peer(site.box("box-b"), "box-a")  # box-a's client id
    intruder = peer(site.box("box-b"), "dashboard")  # the dashboard's, clean start
    own = wire.topic(SITE_ID, "box-a", "metrics")
    assert box_a.publish(own, metrics("box-a", 1)).value == 0  # still connected, still heard
    dash.expect(own)
    assert not box_a.disconnected and not dash.disconnected
    assert box_b.connack is not None and not box_b.connack.is_failure
    assert intruder.connack is not None and not intruder.connack.is_failure
    assert site.log.read_text().count("listen socket") == 1  # the option put no listener on 1883


def test_box_cannot_read_other_boxes(site: SiteFiles, peer: Callable[..., Peer]) -> None:
    box_a = peer(site.box("box-a"), "box-a")
    rc = box_a.subscribe("miroir/#")
    # Mosquitto 2.0.11 grants the wildcard SUBACK and filters each message on delivery;
    # either way box-a must see nothing of box-b.
    assert rc.value in (1, NOT_AUTHORIZED), rc
    box_b = peer(site.box("box-b"), "box-b")
    for kind in wire.UP_KINDS:
        assert not box_b.publish(wire.topic(SITE_ID, "box-b", kind), b"{}").is_failure
    dash = peer(site.dashboard, "dashboard")
    assert not dash.publish(wire.topic(SITE_ID, "box-b", "cmd"), b"{}").is_failure
    mine = wire.topic(SITE_ID, "box-a", "cmd")
    assert dash.publish(mine, b'{"n":1}').value == 0
    if rc.value == NOT_AUTHORIZED:
        assert box_a.subscribe(mine).value == 1
        assert dash.publish(mine, b'{"n":1}').value == 0
    assert box_a.expect(mine) == b'{"n":1}'  # box-a does get its own commands
    assert set(box_a.topics()) == {mine}


def test_a_box_cannot_push_a_huge_message_through_the_broker(
    site: SiteFiles, peer: Callable[..., Peer]
) -> None:
    """A box (a stolen certificate, a buggy firmware) that publishes far past the contract's 4096
    bytes is disconnected by the broker and the message goes nowhere. Before, the broker took
    five 64 MiB messages (its memory from 10 to 262 MB, the dashboard's from 87 to 305 MB) and
    kept a retained 32 MiB status on disk, sent again at every dashboard reconnect."""
    dash = peer(site.dashboard, "dashboard")
    dash.subscribe(f"miroir/v1/{SITE_ID}/+/+")
    rogue = peer(site.box("box-a"), "box-a")
    big = b'{"v":1,"x":"' + b"A" * (1 << 20) + b'"}'
    status = wire.topic(SITE_ID, "box-a", "status")
    rogue.client.publish(status, big, qos=1, retain=True)
    rogue.wait_for(lambda: rogue.disconnected, "the broker to disconnect the rogue box")
    rogue.close()
    # Barrier: a message of the contract's largest size still goes through, after the big one.
    box_b = peer(site.box("box-b"), "box-b")
    own = wire.topic(SITE_ID, "box-b", "metrics")
    small = metrics("box-b", 1)
    largest = small[:-1] + b" " * (wire.MAX_PAYLOAD_BYTES - len(small)) + b"}"
    assert len(largest) == wire.MAX_PAYLOAD_BYTES
    assert box_b.publish(own, largest).value == 0
    dash.expect(own)
    assert status not in dash.topics()
    dash.close()  # nothing was retained either: a dashboard subscribing now gets none of it
    late = peer(site.dashboard, "dashboard")
    late.subscribe(f"miroir/v1/{SITE_ID}/+/status")
    assert box_b.publish(wire.topic(SITE_ID, "box-b", "status"), b"{}").value == 0
    late.expect(wire.topic(SITE_ID, "box-b", "status"))  # retained ones come before it
    assert status not in late.topics()


def test_dashboard_cannot_publish_box_data(site: SiteFiles, peer: Callable[..., Peer]) -> None:
    dash = peer(site.dashboard, "dashboard")
    site_root = f"{wire.TOPIC_ROOT}/{SITE_ID}"
    for topic in (f"{site_root}/box-a/metrics", f"{site_root}/box-a/event",
                  f"{site_root}/{dashboard_identity(SITE_ID)}/metrics"):
        rc = dash.publish(topic, metrics("box-a", 1))
        assert rc.value == NOT_AUTHORIZED, (topic, rc)
    assert not dash.publish(f"{site_root}/box-a/cmd", b"{}").is_failure


def test_broker_files_reachable_by_broker_user(site: SiteFiles, broker: Mosquitto) -> None:
    readable = [site.config, site.acl, site.ca_cert, site.server.cert, site.server.key]
    writable = [site.log, site.dir / "persist"]
    secret = [site.ca.key, site.box("box-a").key, site.dashboard.key]
    for pair in (site.box("box-a"), site.dashboard, site.ca):
        assert stat.S_IMODE(pair.key.stat().st_mode) == 0o600
        assert stat.S_IMODE(pair.cert.stat().st_mode) == 0o644
    if os.geteuid() == 0:
        user = pwd.getpwnam(BROKER_USER)
        groups = [g.gr_gid for g in grp.getgrall() if BROKER_USER in g.gr_mem]

        def check(flag: str, path: Path) -> bool:
            return subprocess.run(["test", flag, str(path)], user=user.pw_uid,
                                  group=user.pw_gid, extra_groups=groups).returncode == 0

        for path in readable:
            assert check("-r", path), f"{BROKER_USER} cannot read {path}"
        for path in writable:
            assert check("-w", path), f"{BROKER_USER} cannot write {path}"
        for path in secret:
            assert not check("-r", path), f"{BROKER_USER} can read {path}"
        assert pwd.getpwuid(psutil_uid(broker.pid)).pw_name == BROKER_USER
    else:
        for path in readable:
            assert os.access(path, os.R_OK)
        for path in writable:
            assert os.access(path, os.W_OK)
    assert "Opening ipv4 listen socket" in site.log.read_text()


def psutil_uid(pid: int | None) -> int:
    """Real uid of a process."""
    import psutil

    assert pid is not None
    return int(psutil.Process(pid).uids().real)


def test_retained_status_survives_restart(site: SiteFiles, broker: Mosquitto) -> None:
    box = Peer(site.box("box-a"), site.ca_cert, "box-a", broker.port)
    box.connect()
    status = wire.topic(SITE_ID, "box-a", "status")
    payload = wire.encode("status", wire.status_message(SITE_ID, "box-a", "online", time.time()))
    assert not box.publish(status, payload, retain=True).is_failure
    box.close()
    broker.restart()  # SIGTERM saves the persistence database
    db = site.dir / "persist" / "mosquitto.db"
    assert db.exists()
    if os.geteuid() == 0:
        assert pwd.getpwuid(db.stat().st_uid).pw_name == BROKER_USER
    dash = Peer(site.dashboard, site.ca_cert, "dashboard", broker.port)
    try:
        dash.connect()
        dash.subscribe(f"miroir/v1/{SITE_ID}/+/+")
        assert wire.decode("status", dash.expect(status))["state"] == "online"
    finally:
        dash.close()


def test_runner_signals_and_cleanup(site: SiteFiles) -> None:
    with site.broker() as broker:
        first = broker.pid
        assert first is not None and broker.running
        broker.pause()
        wait_until(lambda: proc_state(first) == "T", "mosquitto to stop on SIGSTOP")
        broker.resume()
        wait_until(lambda: proc_state(first) != "T", "mosquitto to continue on SIGCONT")
        broker.kill()
        assert not broker.running and broker.pid is None
        broker.start()
        second = broker.pid
        assert second is not None and second != first
    assert not broker.running
    wait_until(lambda: not Path(f"/proc/{second}").exists(), "mosquitto to be reaped")


@pytest.mark.parametrize("end", ["stop", "kill"])
def test_stop_and_kill_give_up_on_a_broker_that_outlives_sigkill(
        site: SiteFiles, end: str, caplog: pytest.LogCaptureFixture) -> None:
    """After SIGKILL, stop() and kill() waited for the process with no bound: a Mosquitto in
    uninterruptible sleep (frozen by the cgroup freezer: still waited for 30 s later) hung the
    test teardown or the demo's stop. They give up KILL_WAIT_S later with a warning. Here the
    Popen's wait lock is held, so its wait blocks as on such a process."""
    broker = site.broker().start()
    proc = broker._proc
    assert proc is not None
    bounded = ends_with_wait_lock_held(
        proc, (lambda: broker.stop(timeout_s=0.5)) if end == "stop" else broker.kill, 20)
    assert bounded, f"{end}() still waits for the killed broker"
    assert f"mosquitto pid {proc.pid} still there 5 s after SIGKILL" in caplog.text
    assert not Path(f"/proc/{proc.pid}").exists()


def proc_state(pid: int) -> str:
    """One-letter state of a process from /proc (T = stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_start_failure_reports_log_tail(site: SiteFiles) -> None:
    bad = site.dir / "bad.conf"
    bad.write_text(f"listener {site.port} 127.0.0.1\nno_such_option 1\n")
    with pytest.raises(BrokerError, match="no_such_option"):
        Mosquitto(bad, site.port, site.log).start()


def test_port_in_use_is_reported(site: SiteFiles, broker: Mosquitto) -> None:
    with pytest.raises(BrokerError, match="already in use"):
        Mosquitto(site.config, broker.port, site.log).start()


def test_certificates_carry_identity_and_usage(site: SiteFiles) -> None:
    server = pki.load_cert(site.server.cert)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    for identity, pair in (("box-a", site.box("box-a")), ("dash_site-1", site.dashboard)):
        cert = pki.load_cert(pair.cert)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == identity
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert cert.issuer == pki.load_cert(site.ca_cert).subject
    with pytest.raises(ValueError):
        pki.issue(site.ca, site.dir / "bad", "a/#")


def test_revoke_extends_existing_crl(site: SiteFiles) -> None:
    crl_path = site.dir / "crl.pem"
    pki.revoke(site.ca, crl_path, [site.box("box-a").cert])
    pki.revoke(site.ca, crl_path, [site.box("box-b").cert])
    crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    serials = {pki.load_cert(site.box(b).cert).serial_number for b in ("box-a", "box-b")}
    assert {entry.serial_number for entry in crl} == serials
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2


def test_free_port_is_bindable_and_never_one_a_client_connection_can_take() -> None:
    """A broker restarted on its port after an outage drill found it taken ("Address already in
    use", CI under load): the port came from the range outgoing connections take theirs from."""
    from provisioning.broker import EPHEMERAL_RANGE_FILE

    low = int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    for _ in range(20):
        port = free_port()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
        assert 1024 <= port < low


def _drawn_ports(xdist: dict[str, str], draws: int) -> list[int]:
    """Ports ``free_port`` draws ``draws`` times in a new Python process, as a test's subprocess
    started by the pytest-xdist worker ``xdist`` (its environment variables, none: no worker)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
    env |= {**xdist, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    code = ("from provisioning.broker import free_port\n"
            f"print(*(free_port() for _ in range({draws})))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    return [int(port) for port in done.stdout.split()]


def test_two_pytest_workers_and_their_subprocesses_never_draw_the_same_port() -> None:
    """Every pytest-xdist worker drew from the same 12,000 ports: one worker could take a port
    between another's draw and its broker's or demo's bind ("port already in use", or a test
    talking to the other worker's server). Each worker now has its own slice, which the demo
    and CLI processes its tests start inherit through the environment."""
    from provisioning.broker import EPHEMERAL_RANGE_FILE

    low = int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    span = range(max(1024, low - 12000), low)
    size = len(span) // 3
    for index in range(3):
        drawn = _drawn_ports({"PYTEST_XDIST_WORKER": f"gw{index}",
                              "PYTEST_XDIST_WORKER_COUNT": "3"}, 100)
        own = range(span.start + index * size, span.start + (index + 1) * size)
        assert len(drawn) == 100 and set(drawn) <= set(own), (index, own, sorted(drawn))
    alone = _drawn_ports({}, 100)  # outside pytest-xdist (the product): the whole span, as before
    assert set(alone) <= set(span)
    assert len({(port - span.start) // size for port in alone}) > 1, sorted(alone)

    from provisioning.broker import worker_ports  # the slices of 1 to 8 workers

    for count in range(1, 9):
        slices = [set(worker_ports(span, {"PYTEST_XDIST_WORKER": f"gw{i}",
                                          "PYTEST_XDIST_WORKER_COUNT": str(count)}))
                  for i in range(count)]
        assert all(len(ports) == len(span) // count for ports in slices)
        assert len(set().union(*slices)) == count * (len(span) // count)  # pairwise disjoint
        assert set().union(*slices) <= set(span)
    assert worker_ports(span, {}) == span  # not under pytest-xdist: all of them


def test_site_dir_unreachable_by_broker_user_is_refused(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    if os.geteuid() == 0:
        with pytest.raises(BrokerError, match="cannot traverse"):
            make_site(private / "site", SITE_ID, ["box-a"])
    else:  # Mosquitto runs as this user: nothing to check, the site is made
        assert make_site(private / "site", SITE_ID, ["box-a"]).config.exists()

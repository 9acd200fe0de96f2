"""The site broker: generated Mosquitto 2.0 config and ACL, and a Mosquitto process runner.

Every box authenticates with its own client certificate; the certificate's CN is the MQTT
username (``use_identity_as_username``) and the ACL confines each box to its own topics. The
dashboard has its own identity, :func:`dashboard_identity`, which cannot collide with a box id.

Mosquitto started as root drops to the ``mosquitto`` user, so every file the broker reads or
writes, and every directory above them, must be reachable by that user. :func:`new_site_dir`
makes such a directory under ``/tmp``; :func:`make_site` checks it and sets owners and modes.
"""

from __future__ import annotations

import atexit
import grp
import logging
import os
import pwd
import random
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from miroir import wire
from provisioning import pki
from provisioning.pki import CertPair

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

MOSQUITTO = "/usr/sbin/mosquitto"
BROKER_USER = "mosquitto"
SERVER_HOSTS = ("localhost", "127.0.0.1")
AUTOSAVE_INTERVAL_S = 5
"""Mosquitto saves its sessions and queued messages this often (its default, 1800 s, would lose up
to half an hour of queued messages to a crash; the dashboard asks boxes to resend what is lost)."""
MAX_QUEUED_MESSAGES = 100_000
MAX_INFLIGHT = 1000
MAX_PACKET_BYTES = 2 * wire.MAX_PAYLOAD_BYTES
"""Largest MQTT packet the broker takes from any client (a payload of the wire contract's
4096 bytes at most, its topic and headers): past it the client is disconnected, so a box cannot
fill the broker's memory, its disk (a retained message) or the dashboard's with one message."""
KILL_WAIT_S = 5.0
"""How long stop() and kill() (and the demo's stop) wait for a process after SIGKILL before
giving up on it with a warning: one in uninterruptible sleep (a hung disk) outlives SIGKILL."""
CONFIG_FILE = "mosquitto.conf"
ACL_FILE = "acl"
LOG_FILE = "mosquitto.log"
PERSIST_DIR = "persist"
CRL_FILE = "crl.pem"


class BrokerError(RuntimeError):
    """Mosquitto failed to start or the site layout is unusable by it."""


def dashboard_identity(site: str) -> str:
    """Return the dashboard's certificate CN (and MQTT username) for ``site``.

    The underscore is outside the box id alphabet ``[a-z0-9-]``, so no box can take this name.
    """
    return f"dash_{wire.check_id(site, 'site')}"


def bridge_identity(site: str) -> str:
    """Return the certificate CN (and username on the central broker) of a site's bridge."""
    return f"bridge_{wire.check_id(site, 'site')}"


@dataclass(frozen=True)
class BridgeConfig:
    """Where and how a site broker bridges to a central broker.

    Up-going messages of the site (status, metrics, event) go out, the site's boxes' commands
    come in, both at QoS 1, with a persistent session on both sides so that the central broker
    being away loses nothing the site broker holds.
    """

    site: str
    host: str
    port: int
    ca: Path
    """The central broker's CA certificate."""
    identity: CertPair
    """The bridge's client certificate (CN :func:`bridge_identity`), issued by the central CA."""


def bridge_entries(bridge: BridgeConfig) -> list[tuple[str, str]]:
    """Mosquitto 2.0 directives (with their comments) of a site-to-central bridge."""
    site = wire.check_id(bridge.site, "site")
    root = f"{wire.TOPIC_ROOT}/{site}"
    name = bridge_identity(site).replace("_", "-")
    entries: list[tuple[str, str]] = [
        ("Bridge to the central broker (multi-site groups); directives below belong to it.",
         f"connection {name}"),
        ("Central broker address.", f"address {bridge.host}:{bridge.port}"),
        ("MQTT 3.1.1 bridge (the most tested in Mosquitto 2.0), QoS 1 both ways.",
         "bridge_protocol_version mqttv311"),
        ("Client id on the central broker (stable: its session is kept).",
         f"remote_clientid {name}"),
        ("Client id of the bridge on this broker.", f"local_clientid {name}-local"),
        ("Keep the session on the central broker while away.", "cleansession false"),
        ("Keep the bridge's queue on this broker across its restarts.",
         "local_cleansession false"),
        ("Reconnect after 1 s, backing off up to 120 s.", "restart_timeout 1 120"),
        ("Start the bridge when the broker starts.", "start_type automatic"),
        ("No connection-state notifications (the central ACL refuses them).",
         "notifications false"),
        ("Keepalive with the central broker, in seconds.", "keepalive_interval 30"),
        ("Central CA certificate.", f"bridge_cafile {bridge.ca}"),
        ("The bridge's client certificate.", f"bridge_certfile {bridge.identity.cert}"),
        ("The bridge's private key.", f"bridge_keyfile {bridge.identity.key}"),
        ("Check the central broker's name against its certificate.", "bridge_insecure false"),
    ]
    for kind in wire.UP_KINDS:
        entries.append((f"Forward the site's {kind} messages to the central broker.",
                        f"topic {root}/+/{kind} out 1"))
    entries.append(("Receive commands for the site's boxes from the central dashboard.",
                    f"topic {root}/+/{wire.CMD_KIND} in 1"))
    return entries


def _broker_ids() -> tuple[int, int] | None:
    """(uid, gid) of the user Mosquitto drops to, or None when no chown is needed or possible."""
    if os.geteuid() != 0:
        return None
    try:
        user = pwd.getpwnam(BROKER_USER)
    except KeyError:
        return None
    return user.pw_uid, user.pw_gid


def _may_traverse(st: os.stat_result, ids: tuple[int, int]) -> bool:
    uid, gid = ids
    groups = {gid, *(g.gr_gid for g in grp.getgrall() if BROKER_USER in g.gr_mem)}
    if st.st_uid == uid:
        return bool(st.st_mode & 0o100)
    if st.st_gid in groups:
        return bool(st.st_mode & 0o010)
    return bool(st.st_mode & 0o001)


def check_reachable(path: Path) -> None:
    """Raise :class:`BrokerError` if the broker user cannot traverse every directory to ``path``.

    Only meaningful as root (Mosquitto then drops to the ``mosquitto`` user); a no-op otherwise.
    """
    ids = _broker_ids()
    if ids is None:
        return
    path = Path(path).resolve()
    for directory in (path, *path.parents):
        if not _may_traverse(directory.stat(), ids):
            raise BrokerError(
                f"user {BROKER_USER!r} cannot traverse {directory} (mode "
                f"{directory.stat().st_mode & 0o777:o}); make the site directory with "
                "provisioning.broker.new_site_dir()"
            )


def new_site_dir(prefix: str = "miroir-site-") -> Path:
    """Create a fresh site directory under the system temp dir (mode 0755) and return it."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    check_reachable(path)
    return path


def write_acl(path: Path, site: str) -> Path:
    """Write the site's Mosquitto ACL to ``path``: deny by default, each box to its own topics.

    Args:
        path: File to write.
        site: Site id.

    Returns:
        ``path``.
    """
    wire.check_id(site, "site")
    root = f"{wire.TOPIC_ROOT}/{site}"
    dash = dashboard_identity(site)
    lines = [
        f"# Mosquitto ACL for Miroir site {site}; generated by provisioning.broker, do not edit.",
        "# Deny by default: a client may only do what a line below grants.",
        "",
        f"# The dashboard identity {dash} (certificate CN).",
        f"user {dash}",
        "# It reads every box's up-going messages (status, metrics, event) ...",
        f"topic read {root}/+/+",
        "# ... and sends commands to any box; it may publish nothing else (no box data).",
        f"topic write {root}/+/{wire.CMD_KIND}",
        "# Deny lines are checked first: the box patterns below give it no topic of its own.",
        f"topic deny {root}/{dash}/#",
        "",
        "# Boxes: %u is the username, which is the certificate CN, which is the box id.",
    ]
    for kind in wire.UP_KINDS:
        lines += [f"# A box publishes its own {kind} only.", f"pattern write {root}/%u/{kind}"]
    lines += [
        "# A box receives its own commands only.",
        f"pattern read {root}/%u/{wire.CMD_KIND}",
    ]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o644)
    return path


def write_config(
    dir: Path,
    *,
    port: int,
    ca: CertPair,
    server: CertPair,
    acl: Path,
    host: str = "127.0.0.1",
    crl: Path | None = None,
    bridge: BridgeConfig | None = None,
) -> Path:
    """Write a Mosquitto 2.0 config with a single TLS listener into ``dir``.

    Persistence goes to ``dir/persist/`` and the log to ``dir/mosquitto.log``.

    Args:
        dir: Site directory (config, log and persistence are written here).
        port: TCP port of the TLS listener.
        ca: Site CA; only certificates it signed are accepted.
        server: The broker's certificate and key.
        acl: ACL file from :func:`write_acl`.
        host: Address the listener binds to.
        crl: Optional PEM CRL from :func:`provisioning.pki.revoke`.
        bridge: Optional bridge to a central broker.

    Returns:
        Path of the config file.
    """
    dir = Path(dir)
    persist = dir / PERSIST_DIR
    entries: list[tuple[str, str]] = [
        ("Drop root privileges to this user (ignored when not started as root).",
         f"user {BROKER_USER}"),
        ("Security settings (anonymous, ACL) are global, not per listener.",
         "per_listener_settings false"),
        ("Every client must authenticate; there is no anonymous access.",
         "allow_anonymous false"),
        ("Topic permissions: deny by default, one box per certificate CN.",
         f"acl_file {acl}"),
        ("Keep sessions, queued QoS 1 messages and retained status across restarts.",
         "persistence true"),
        ("Directory of the persistence database (trailing slash required).",
         f"persistence_location {persist}/"),
        (f"Save the in-memory state to disk every {AUTOSAVE_INTERVAL_S} s (default 1800 s).",
         f"autosave_interval {AUTOSAVE_INTERVAL_S}"),
        ("Per-client queue bound while a client is offline (default 1000).",
         f"max_queued_messages {MAX_QUEUED_MESSAGES}"),
        ("No byte bound on the queue: the message count above is the bound.",
         "max_queued_bytes 0"),
        ("QoS 1 messages in flight to one client (default 20 caps the dashboard's ingest "
         "rate at one window per round trip).", f"max_inflight_messages {MAX_INFLIGHT}"),
        (f"Disconnect a client that sends a packet over {MAX_PACKET_BYTES} bytes (payloads "
         f"are {wire.MAX_PAYLOAD_BYTES} bytes at most; the default is no limit).",
         f"max_packet_size {MAX_PACKET_BYTES}"),
        ("Send small messages at once (latency over throughput).",
         "set_tcp_nodelay true"),
        ("Log to a file in the site directory; no other destination (so not stderr).",
         f"log_dest file {dir / LOG_FILE}"),
        ("Log errors.", "log_type error"),
        ("Log warnings.", "log_type warning"),
        ("Log notices (start, stop, listeners).", "log_type notice"),
        ("Log informational messages (client connections, refusals).",
         "log_type information"),
        ("Log each client connection and disconnection.", "connection_messages true"),
        ("Timestamp each log line.", "log_timestamp true"),
        ("Readable ISO 8601 timestamps.", "log_timestamp_format %Y-%m-%dT%H:%M:%S"),
        ("The only listener: MQTT over TLS (there is no plain listener).",
         f"listener {port} {host}"),
        ("MQTT over TCP, not websockets.", "protocol mqtt"),
        ("Oldest TLS version accepted.", "tls_version tlsv1.2"),
        ("CA whose signature a client certificate must carry.", f"cafile {ca.cert}"),
        ("The broker's certificate (SAN localhost, 127.0.0.1).", f"certfile {server.cert}"),
        ("The broker's private key.", f"keyfile {server.key}"),
        ("Refuse a TLS client that presents no valid certificate.",
         "require_certificate true"),
        ("The certificate CN becomes the MQTT username used by the ACL.",
         "use_identity_as_username true"),
        ("The client id is the username (the certificate CN), whatever the client sends: no "
         "client can take over another's session (disconnect a box, fire its Last Will, wipe "
         "the dashboard's queue).", "use_username_as_clientid true"),
    ]
    if crl is not None:
        entries.append(("Refuse revoked certificates.", f"crlfile {crl}"))
    if bridge is not None:
        entries += bridge_entries(bridge)
    lines = [
        "# Mosquitto 2.0 config for a Miroir site broker; generated by provisioning.broker.",
        "# Mosquitto has no end-of-line comments: each directive's comment is the line above it.",
    ]
    for comment, directive in entries:
        lines += [f"# {comment}", directive]
    path = dir / CONFIG_FILE
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o644)
    return path


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
FREE_PORTS_SPAN = 12000
"""How many ports below the kernel's ephemeral range :func:`free_port` draws from."""


def worker_ports(ports: range, env: Mapping[str, str]) -> range:
    """The share of ``ports`` of the pytest-xdist worker ``env`` names, else all of them.

    pytest-xdist sets ``PYTEST_XDIST_WORKER`` (``gw0``, ``gw1``...) and
    ``PYTEST_XDIST_WORKER_COUNT`` in each worker, and the processes a test starts inherit them:
    worker ``i`` of ``n`` takes the ``i``-th of ``n`` disjoint equal slices, so that two workers
    never draw the same port (one could take it between the other's draw and its server's bind).
    """
    worker = env.get("PYTEST_XDIST_WORKER", "")
    try:
        index, count = int(worker.removeprefix("gw")), int(env["PYTEST_XDIST_WORKER_COUNT"])
    except (KeyError, ValueError):
        return ports
    size = len(ports) // count if count > 0 else 0
    if not worker.startswith("gw") or not 0 <= index < count or size == 0:
        log.warning("ignoring pytest-xdist worker %r of %s: drawing from all ports",
                    worker, env.get("PYTEST_XDIST_WORKER_COUNT"))
        return ports
    return ports[index * size:(index + 1) * size]


def free_port(host: str = "127.0.0.1", avoid: Collection[int] = ()) -> int:
    """Return a TCP port that is free on ``host`` right now, below the kernel's ephemeral range.

    Outgoing connections take their local port from that range: a broker stopped and started
    again on a port from it (an outage drill) could find it taken by any client's connection in
    between ("Address already in use"). Ports just below it are never handed out that way.
    ``avoid``: ports promised to something not listening yet (a dashboard about to start).
    Under pytest-xdist each worker draws from its own ports (:func:`worker_ports`).
    """
    try:
        low = int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    span = range(max(1024, low - FREE_PORTS_SPAN), low)
    candidates = worker_ports(span, os.environ)
    for port in random.sample(candidates, min(64, len(candidates))):
        if port in avoid:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    if candidates != span:  # a worker's own ports all taken: another worker's could be next
        raise OSError(f"no free TCP port on {host} in {candidates.start} to "
                      f"{candidates.stop - 1} (this pytest-xdist worker's)")
    for _ in range(64):  # all taken: any free port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            if (port := int(sock.getsockname()[1])) not in avoid:
                return port
    raise OSError(f"no free TCP port on {host}")


def _port_open(host: str, port: int, timeout_s: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _raise_fd_limit() -> None:
    """Raise the soft descriptor limit to the hard one (thousands of TLS clients)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


_LIVE: set[Mosquitto] = set()


@atexit.register
def _kill_all() -> None:
    for broker in list(_LIVE):
        broker.kill()


class Mosquitto:
    """A Mosquitto process running a generated config; a context manager that always cleans up."""

    def __init__(self, config: Path, port: int, log: Path, *, host: str = "127.0.0.1",
                 own_group: bool = False) -> None:
        self.config = Path(config)
        self.port = port
        self.log = Path(log)
        self.host = host
        self.own_group = own_group  # a process group of its own: a terminal's Ctrl-C misses it
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def pid(self) -> int | None:
        """Process id while running, else None."""
        return self._proc.pid if self.running and self._proc else None

    @property
    def running(self) -> bool:
        """True while the process exists (even paused)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def stderr_path(self) -> Path:
        """File receiving Mosquitto's stderr (early errors before its log opens)."""
        return self.log.with_name(self.log.name + ".stderr")

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        """Start Mosquitto and wait until its TLS port accepts a TCP connection.

        Args:
            timeout_s: Seconds to wait for the port.

        Returns:
            self.
        """
        if self.running:
            return self
        if _port_open(self.host, self.port):
            raise BrokerError(f"port {self.host}:{self.port} is already in use")
        with open(self.stderr_path, "ab") as err:
            self._proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                preexec_fn=_raise_fd_limit,
                process_group=0 if self.own_group else None,
            )
        self._paused = False
        _LIVE.add(self)
        deadline = time.monotonic() + timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                _LIVE.discard(self)
                raise BrokerError(self._failure(f"mosquitto exited with code {code}"))
            if _port_open(self.host, self.port):
                break
            if time.monotonic() > deadline:
                self.kill()
                what = f"mosquitto did not open {self.host}:{self.port} in {timeout_s} s"
                raise BrokerError(self._failure(what))
            time.sleep(0.02)
        log.info("mosquitto pid %d listening on %s:%d", self._proc.pid, self.host, self.port)
        return self

    def _failure(self, what: str) -> str:
        return (
            f"{what} (config {self.config})\n--- log tail ({self.log}) ---\n{_tail(self.log)}"
            f"\n--- stderr ---\n{_tail(self.stderr_path)}"
        )

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop with SIGTERM (Mosquitto saves its persistence), SIGKILL after ``timeout_s``."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._forget()
            return
        proc.send_signal(signal.SIGTERM)
        if self._paused:
            proc.send_signal(signal.SIGCONT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("mosquitto pid %d ignored SIGTERM; killing it", proc.pid)
            self._kill(proc)
        self._forget()

    def kill(self) -> None:
        """Kill with SIGKILL (a crash: nothing is saved since the last autosave)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._kill(proc)
        self._forget()

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL ``proc`` and wait for it, giving up after ``KILL_WAIT_S`` with a warning."""
        proc.kill()
        try:
            proc.wait(KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            log.warning("mosquitto pid %d still there %.0f s after SIGKILL (uninterruptible "
                        "sleep?); giving up on it", proc.pid, KILL_WAIT_S)

    def pause(self) -> None:
        """Freeze the process with SIGSTOP (the port stays open but nothing is answered)."""
        if self._proc is None or not self.running:
            raise BrokerError("mosquitto is not running")
        self._proc.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Thaw a paused process with SIGCONT."""
        if self._proc is None or not self.running:
            raise BrokerError("mosquitto is not running")
        self._proc.send_signal(signal.SIGCONT)
        self._paused = False

    def restart(self, timeout_s: float = 10.0) -> Mosquitto:
        """Stop gracefully then start again on the same port."""
        self.stop()
        return self.start(timeout_s)

    def _forget(self) -> None:
        self._paused = False
        _LIVE.discard(self)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class SiteFiles:
    """Everything a site broker and its clients need, as files in ``dir``."""

    dir: Path
    site: str
    port: int
    ca: CertPair
    server: CertPair
    dashboard: CertPair
    acl: Path
    config: Path
    log: Path
    boxes: dict[str, CertPair] = field(default_factory=dict)

    @property
    def ca_cert(self) -> Path:
        """The site CA certificate (what clients verify the broker with)."""
        return self.ca.cert

    def box(self, box_id: str) -> CertPair:
        """Certificate and key of a provisioned box."""
        try:
            return self.boxes[box_id]
        except KeyError:
            raise KeyError(f"box {box_id!r} is not provisioned in site {self.site}") from None

    def add_box(self, box_id: str) -> CertPair:
        """Issue a client certificate for one more box (``dir/boxes/<box>/``)."""
        wire.check_id(box_id, "box")
        pair = pki.issue(self.ca, self.dir / "boxes" / box_id, box_id)
        self.boxes[box_id] = pair
        return pair

    def broker(self) -> Mosquitto:
        """A (not yet started) Mosquitto running this site's config."""
        return Mosquitto(self.config, self.port, self.log)


def _own(path: Path, uid: int, gid: int, mode: int) -> None:
    os.chown(path, uid, gid)
    path.chmod(mode)


def make_site(
    dir: Path,
    site: str,
    boxes: Sequence[str],
    *,
    port: int | None = None,
    hosts: Sequence[str] = SERVER_HOSTS,
    bind: str = "127.0.0.1",
) -> SiteFiles:
    """Provision a whole site in ``dir``: CA, broker, one certificate per box, dashboard, config.

    Layout: ``ca/``, ``broker/``, ``boxes/<box>/``, ``dashboard/`` (each ``cert.pem`` and
    ``key.pem``), ``acl``, ``mosquitto.conf``, ``mosquitto.log``, ``persist/``.

    Args:
        dir: Site directory; as root it must be traversable by the ``mosquitto`` user
            (see :func:`new_site_dir`).
        site: Site id.
        boxes: Box ids to provision.
        port: TLS port; a free one by default.
        hosts: Names and addresses in the broker certificate's SAN (add the site server's
            LAN name or address for real boxes).
        bind: Address the TLS listener binds to (``0.0.0.0`` to serve the LAN).

    Returns:
        The site's files.
    """
    wire.check_id(site, "site")
    for box_id in boxes:
        wire.check_id(box_id, "box")
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    check_reachable(dir)
    port = port or free_port()
    ca = pki.create_ca(dir / "ca", site)
    server = pki.issue(ca, dir / "broker", hosts[0], server=True, hosts=hosts)
    dashboard = pki.issue(ca, dir / "dashboard", dashboard_identity(site))
    files = SiteFiles(
        dir=dir,
        site=site,
        port=port,
        ca=ca,
        server=server,
        dashboard=dashboard,
        acl=write_acl(dir / ACL_FILE, site),
        config=dir / CONFIG_FILE,
        log=dir / LOG_FILE,
    )
    for box_id in boxes:
        files.add_box(box_id)
    persist = dir / PERSIST_DIR
    persist.mkdir(exist_ok=True)
    files.log.touch()
    for sub in ("ca", "broker"):
        (dir / sub).chmod(0o755)
    ids = _broker_ids()
    if ids is None:
        persist.chmod(0o700)
        files.log.chmod(0o600)
    else:
        uid, gid = ids
        _own(server.key, 0, gid, 0o640)  # root-owned, readable by the broker's group only
        _own(persist, uid, gid, 0o750)
        _own(files.log, uid, gid, 0o640)
    write_config(dir, port=port, ca=ca, server=server, acl=files.acl, host=bind)
    log.info("site %s provisioned in %s (port %d, %d boxes)", site, dir, port, len(boxes))
    return files


def write_central_acl(path: Path, sites: Sequence[str]) -> Path:
    """Write the central broker's ACL: per site, its bridge and its central dashboard.

    A site's bridge may publish that site's up-going messages only and read its boxes'
    commands; the site's central dashboard (CN :func:`dashboard_identity`) reads the site and
    writes its boxes' commands, as on the site broker.
    """
    lines = ["# Mosquitto ACL of a Miroir central broker; generated by provisioning.broker.",
             "# Deny by default: a client may only do what a line below grants."]
    for site in sites:
        root = f"{wire.TOPIC_ROOT}/{wire.check_id(site, 'site')}"
        lines += ["", f"# Bridge of site {site}: its up-going messages out, its commands in.",
                  f"user {bridge_identity(site)}"]
        lines += [f"topic write {root}/+/{kind}" for kind in wire.UP_KINDS]
        lines += [f"topic read {root}/+/{wire.CMD_KIND}",
                  "", f"# Central dashboard of site {site}.", f"user {dashboard_identity(site)}",
                  f"topic read {root}/+/+", f"topic write {root}/+/{wire.CMD_KIND}"]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o644)
    return path


@dataclass
class CentralFiles:
    """A central broker for multi-site groups: its own CA, one bridge and dashboard per site."""

    dir: Path
    port: int
    ca: CertPair
    server: CertPair
    acl: Path
    config: Path
    log: Path
    bridges: dict[str, CertPair] = field(default_factory=dict)
    dashboards: dict[str, CertPair] = field(default_factory=dict)

    def broker(self) -> Mosquitto:
        """A (not yet started) Mosquitto running the central config."""
        return Mosquitto(self.config, self.port, self.log)

    def bridge_for(self, site: SiteFiles, host: str = "localhost") -> BridgeConfig:
        """Bridge settings for ``site`` (its certificate is issued here on first use)."""
        return BridgeConfig(site=site.site, host=host, port=self.port, ca=self.ca.cert,
                            identity=self.bridges[site.site])


def make_central(dir: Path, sites: Sequence[str], *, port: int | None = None,
                 hosts: Sequence[str] = SERVER_HOSTS, bind: str = "127.0.0.1") -> CentralFiles:
    """Provision a central broker in ``dir`` for ``sites``: CA, server, bridges, dashboards.

    Layout: ``ca/``, ``broker/``, ``bridges/<site>/``, ``dashboards/<site>/``, ``acl``,
    ``mosquitto.conf``, ``mosquitto.log``, ``persist/``. Bridge keys are made readable by the
    site broker's user (it reads them after dropping root).
    """
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    check_reachable(dir)
    port = port or free_port()
    ca = pki.create_ca(dir / "ca", "central")
    server = pki.issue(ca, dir / "broker", hosts[0], server=True, hosts=hosts)
    files = CentralFiles(dir=dir, port=port, ca=ca, server=server,
                         acl=write_central_acl(dir / ACL_FILE, sites), config=dir / CONFIG_FILE,
                         log=dir / LOG_FILE)
    for site in sites:
        files.bridges[site] = pki.issue(ca, dir / "bridges" / site, bridge_identity(site))
        files.dashboards[site] = pki.issue(ca, dir / "dashboards" / site,
                                           dashboard_identity(site))
    persist = dir / PERSIST_DIR
    persist.mkdir(exist_ok=True)
    files.log.touch()
    for sub in ("ca", "broker", "bridges", *(f"bridges/{s}" for s in sites)):
        (dir / sub).chmod(0o755)
    ids = _broker_ids()
    if ids is not None:
        uid, gid = ids
        _own(server.key, 0, gid, 0o640)
        for pair in files.bridges.values():
            _own(pair.key, 0, gid, 0o640)
        _own(persist, uid, gid, 0o750)
        _own(files.log, uid, gid, 0o640)
    write_config(dir, port=port, ca=ca, server=server, acl=files.acl, host=bind)
    return files


def add_bridge(site: SiteFiles, central: CentralFiles, *, host: str = "localhost") -> Path:
    """Rewrite ``site``'s broker config with a bridge to ``central``; return the config path."""
    return write_config(site.dir, port=site.port, ca=site.ca, server=site.server, acl=site.acl,
                        bridge=central.bridge_for(site, host))


def tls_client(identity_files: CertPair | None, ca: Path, client_id: str) -> mqtt.Client:
    """An MQTT v5 paho client set up for TLS with a client certificate (not yet connected).

    The broker's name is checked against its certificate's SAN, so connect to ``localhost`` or
    ``127.0.0.1``. ``identity_files=None`` makes a client with no certificate (tests).
    """
    import ssl

    import paho.mqtt.client as mqtt

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    client.tls_set(
        ca_certs=str(ca),
        certfile=str(identity_files.cert) if identity_files else None,
        keyfile=str(identity_files.key) if identity_files else None,
        cert_reqs=ssl.CERT_REQUIRED,
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )
    return client


PROBE_TIMEOUT_S = 2.0
"""How long :func:`lets_in` waits for the broker's TCP accept, TLS handshake and CONNACK each."""


def lets_in(host: str, port: int, ca: Path, identity: CertPair, client_id: str,
            timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """True if the broker at ``host:port`` lets ``identity`` in now (a success CONNACK to an MQTT
    3.1.1 CONNECT made over TLS 1.2 with it, then a clean DISCONNECT), False if it refuses it as
    revoked (its TLS alert "certificate revoked" in the handshake: with TLS 1.2 the broker checks
    the client's certificate there and names why it refuses it, which TLS 1.3, checking it after
    the handshake, may not get through before its close).

    Raises:
        OSError: the broker cannot be asked (not reachable, no answer, its own certificate not
            signed by ``ca`` for ``host``, ``identity``'s files unreadable), or it closed the
            connection or refused it for another reason than a revoked certificate (its
            ``max_connections`` reached, another TLS alert, a CONNACK refusal): that is no answer
            about the certificate's revocation.
    """
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # checks the broker's name and CA
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # the refusal's reason in the handshake
    context.load_verify_locations(str(ca))
    context.load_cert_chain(str(identity.cert), str(identity.key))
    ident = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(ident).to_bytes(2, "big") + ident
    connect = bytes([0x10, len(body)]) + body  # (one length byte: ids are 32 bytes at most)
    with socket.create_connection((host, port), timeout=timeout_s) as raw:
        try:
            tls = context.wrap_socket(raw, server_hostname=host)
        except ssl.SSLCertVerificationError:
            raise  # the broker is not the one asked for: no answer about the certificate
        except ssl.SSLError as exc:
            if exc.reason == REVOKED_ALERT:
                return False
            raise ConnectionError(f"the TLS handshake failed, not as revoked: {exc}") from exc
        except ConnectionError as exc:
            raise ConnectionError(f"closed in the TLS handshake, not as revoked: {exc}") from exc
        with tls:
            answer = b""
            tls.sendall(connect)
            while len(answer) < 4 and (chunk := tls.recv(4 - len(answer))):
                answer += chunk
            if len(answer) < 4 or answer[0] != 0x20:
                raise ConnectionError(f"closed before its CONNACK (got {answer!r}), after a TLS "
                                      "handshake that took the certificate")
            if answer[3] != 0:
                raise ConnectionError(f"CONNACK refusal code {answer[3]}, after a TLS handshake "
                                      "that took the certificate")
            tls.sendall(b"\xe0\x00")  # DISCONNECT: gone cleanly
            return True


REVOKED_ALERT = "SSLV3_ALERT_CERTIFICATE_REVOKED"
"""OpenSSL's reason for the TLS alert a server sends for a revoked client certificate."""


def served_serial(host: str, port: int, ca: Path, identity: CertPair,
                  timeout_s: float = PROBE_TIMEOUT_S) -> int:
    """Serial number of the certificate the broker at ``host:port`` serves now: a TLS handshake
    with ``identity``, closed before any MQTT packet (no session is opened or taken over).

    Raises:
        OSError: the broker cannot be asked (not reachable, no answer, a certificate not signed
            by ``ca`` for ``host``, ``identity``'s files unreadable).
    """
    import ssl

    from cryptography import x509

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(ca))
    context.load_cert_chain(str(identity.cert), str(identity.key))
    with socket.create_connection((host, port), timeout=timeout_s) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise OSError(f"the broker at {host}:{port} showed no certificate")
    return int(x509.load_der_x509_certificate(der).serial_number)

"""A site directory and the operations site IT runs on it: init, enrol, revoke, rotate.

Layout of a site directory (everything written with safe permissions: private keys 0600, the
broker's 0640 for its group)::

    site.json            site id, broker address and port
    inventory.json       enrolled boxes (seat, agent, team, certificate serial, state)
    ca/                  site CA (key 0600: the site's crown jewel, see `miroir provision backup`)
    broker/              Mosquitto's server certificate (SAN: the broker host, localhost)
    dashboard/           the dashboard's MQTT identity (CN dash_<site>)
    boxes/<box>/         each box's certificate and key (old/ keeps rotated-out certificates)
                         (boxes/, bundles/, dashboard/: 0700; inventory.json: 0600)
    bundles/<box>.json   each box's first-boot bundle (+ .sha256)
    acl, crl.pem, mosquitto.conf, persist/, mosquitto.log
    dashboard.env        MIROIR_DASH_* settings for the dashboard's unit
    admin-password       first dashboard admin password (0600; used once on an empty database)

Revocation cuts a box off at once even while it is connected. Measured on Mosquitto 2.0.11: a
SIGHUP reloads the CRL (new TLS handshakes of the box fail) and the ACL (its publishes get "Not
authorized") but leaves its TCP connection open, and 2.0 has no admin "kick". The broker names
every client after its certificate's CN (``use_username_as_clientid``), so no client can take over
another's session; :meth:`Site.revoke` (1) adds the certificates to the CRL, (2) denies the box
every topic in the ACL, (3) reloads the broker and waits until it refuses a one-time certificate
revoked in the same CRL (the broker reads a SIGHUP a moment after it, and a process that is not
the broker reloads nothing: the command then fails, saying so), and (4) connects once with a
certificate the CA issues for the box's own CN on the spot (valid 10 minutes, its key never
written outside a 0700 staging folder, revoked after use), which makes the broker close the box's
connection; the box's reconnection is then refused by the CRL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import ipaddress
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from miroir import wire
from miroir.files import atomic_write
from provisioning import bundle as bundle_mod
from provisioning import pki
from provisioning.broker import (
    ACL_FILE,
    CRL_FILE,
    SERVER_HOSTS,
    dashboard_identity,
    lets_in,
    make_site,
    served_serial,
    tls_client,
    write_acl,
    write_config,
)
from provisioning.inventory import (
    ACTIVE,
    INVENTORY_FILE,
    INVENTORY_MODE,
    REVOKED,
    BoxRecord,
    Enrolment,
    Inventory,
    InventoryError,
    check_enrolment,
)
from provisioning.pki import CertPair

log = logging.getLogger(__name__)

SITE_FILE = "site.json"
DEFAULT_PORT = 8883
KICK_TIMEOUT_S = 5.0
"""How long :meth:`Site.kick` waits for the broker to accept its takeover of a box's session."""
CONFIRM_TIMEOUT_S = 5.0
"""How long :meth:`Site.revoke` (and ``rotate --finish``) tries a certificate revoked with the
box's on the broker, after its reload, until it is refused (and :meth:`Site.renew` waits for it to
serve its new certificate). Measured on Mosquitto 2.0.11 with 10 boxes connected: the try made at
once after the SIGHUP was still let in 9 times out of 10, the next one (0.05 s later) refused."""
CONFIRM_RETRY_S = 0.05
"""Pause between two of those tries."""
KICK_CERT_DAYS = 10 / (24 * 60)
"""Validity of the one-time certificate that cuts a revoked box off (10 minutes)."""
BOX_CERT_DAYS = 825
"""Validity of a box's certificate, as the broker's and the dashboard's (``provisioning.pki``): 825
days, about 27 months; ``miroir provision expiry`` and the IT page warn 30 days before its end."""

Reload = Callable[[], None]
DEFAULT_BROKER_UNIT = "mosquitto.service"
"""The broker's unit when none is given (``--broker-unit``'s default)."""
T = TypeVar("T")
LOCK_FILE = ".lock"


PRIVATE_DIRS = ("boxes", "bundles", "dashboard")
"""Folders of keys and bundles: root's only (0700). ``ca`` and ``broker`` stay 0755: the broker,
once it drops to its user, reads the certificates in them (their keys are 0600 and 0640)."""


def private_dir(path: Path) -> Path:
    """Make ``path`` (if missing) and leave it root's only, 0700, whatever the umask."""
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)
    return path


def make_private(site_dir: Path) -> None:
    """Close the folders of keys and bundles (0700) and the inventory (0600) of a site folder, as
    written by an older version or restored from its backup."""
    for sub in PRIVATE_DIRS:
        if (Path(site_dir) / sub).is_dir():
            private_dir(Path(site_dir) / sub)
    inventory = Path(site_dir) / INVENTORY_FILE
    if inventory.exists():
        inventory.chmod(INVENTORY_MODE)


@contextlib.contextmanager
def site_lock(site_dir: Path) -> Iterator[None]:
    """Hold the site directory's lock (waited for) until the block ends."""
    with open(Path(site_dir) / LOCK_FILE, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        yield


def _exclusive(method: Callable[..., T]) -> Callable[..., T]:
    """One site operation at a time (two enrolments at once could each save the inventory
    without the other's box): a lock on the site directory, waited for."""
    @functools.wraps(method)
    def run(self: Site, *args: Any, **kwargs: Any) -> T:
        with site_lock(self.dir):
            return method(self, *args, **kwargs)
    return run


class SiteError(RuntimeError):
    """A site operation that cannot be done (message says why, in one line)."""


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")


def check_host(value: str, what: str = "host") -> str:
    """Return ``value`` if it is an IP address or a DNS name, else raise :class:`SiteError` (it
    goes into the broker's certificate, its config and every box's settings file)."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if len(value) > 253 or not _HOSTNAME.fullmatch(value):
        raise SiteError(f"{what} {value!r:.60} is neither an IP address nor a DNS name")
    return value


def _loopback(host: str) -> bool:
    """True if ``host`` names this machine's loopback (127.0.0.0/8, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() == "localhost" or host.lower().endswith(".localhost")


def _family(host: str) -> int | None:
    """4 or 6 for an IP address, None for a name (resolved by each client)."""
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def check_reachable(bind: str, host: str, option: str) -> None:
    """Raise :class:`SiteError` if a broker listening on ``bind`` can never be reached at ``host``
    (``option`` names the host's command-line option): a loopback listener from a box, a listener
    on a LAN address at this server's loopback, or an address of the other IP version (Mosquitto
    binds ``::`` to IPv6 only, measured on 2.0.11)."""
    why = None
    bind_ip = ipaddress.ip_address(bind) if _family(bind) else None
    if _loopback(bind) and not _loopback(host):
        why = "this server's loopback only"
    elif _loopback(host) and bind_ip is not None and not bind_ip.is_unspecified \
            and not bind_ip.is_loopback:
        why = f"{bind} only, not on this server's loopback"
    elif bind_ip is not None and _family(host) not in (None, bind_ip.version):
        why = f"IPv{bind_ip.version} only, and {host} is an IPv{_family(host)} address"
    if why:
        raise SiteError(f"the broker cannot be reached at {option} {host}: --bind {bind} makes it "
                        f"listen on {why} (--bind 0.0.0.0 listens on every IPv4 address, :: on "
                        "every IPv6 one)")


_ADMIN_USER = re.compile(r"[\w.@-]{1,64}")
"""The first admin's name: it goes unquoted into dashboard.env, which the IT guide's commands
read with ``sh`` (a space, a quote or a ``$`` would break the file there, or run)."""


def check_admin_user(name: str) -> str:
    """Return ``name`` if it is 1 to 64 letters, digits or ``_ . @ -``, else raise
    :class:`SiteError` saying so."""
    if not _ADMIN_USER.fullmatch(name):
        raise SiteError(f"admin user {name!r:.70} must be 1 to 64 letters, digits or _ . @ - "
                        "(dashboard.env is read by the shell), e.g. jean.dupont")
    return name


def check_identity(site: str) -> str:
    """CN of the one-time certificates :meth:`Site.revoke` revokes with a box's and tries on the
    broker after its reload (the underscore keeps it out of the box ids' alphabet)."""
    return f"check_{wire.check_id(site, 'site')}"


def admin_identity(site: str) -> str:
    """CN of the standing identity that site-init gave the provisioning tool before revocation cut
    a box with a one-time certificate (no longer issued; still denied every topic in the ACL)."""
    return f"admin_{wire.check_id(site, 'site')}"


@dataclass(frozen=True)
class BrokerReload:
    """A reload action (:data:`Reload`) with the command-line options that chose it, which the
    command to run again after a failed reload repeats."""

    action: Reload
    args: tuple[str, ...]

    def __call__(self) -> None:
        """Reload the broker."""
        self.action()


def systemctl_reload(unit: str = DEFAULT_BROKER_UNIT) -> Reload:
    """A reload action that runs ``systemctl reload UNIT`` (the broker re-reads CRL and ACL)."""
    def reload() -> None:
        result = subprocess.run(["systemctl", "reload", unit], capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:  # its lines joined: the error stays one line
            said = "; ".join(line.strip() for line in result.stderr.splitlines() if line.strip())
            raise SiteError(f"systemctl reload {unit} failed: {said}")
    return BrokerReload(reload, () if unit == DEFAULT_BROKER_UNIT else ("--broker-unit", unit))


def signal_reload(pid: int) -> Reload:
    """A reload action that sends SIGHUP to the broker process ``pid``."""
    def reload() -> None:
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            raise SiteError(f"no broker process with pid {pid}") from None
    return BrokerReload(reload, ("--broker-pid", str(pid)))


def _not_read(reload: Reload, done: str, again: str, *, asked: bool = True) -> str:
    """What is ``done`` in the site's files, not read by the broker (or, not ``asked``, not
    confirmed read: it may have read them), and the command to run ``again``, with the options
    that chose the broker (a :class:`BrokerReload`'s)."""
    chosen = getattr(reload, "args", ())
    command = " ".join([again, *(shlex.quote(a) for a in chosen)])
    read = ("the running broker has not read them" if asked
            else "whether the running broker has read them could not be confirmed")
    return (f"{done} in the site's files, but {read}; run "
            f"`{command}` again once the broker can be reloaded (with another --broker-pid or "
            "--broker-unit if that one is not the broker's)")


def _reload_for(reload: Reload, done: str, again: str) -> None:
    """Reload the broker; when it fails, say what is ``done`` in the site's files and the
    command to run ``again`` (one line, :class:`SiteError`)."""
    try:
        reload()
    except SiteError as exc:
        raise SiteError(f"{exc}: {_not_read(reload, done, again)}") from None


def _acknowledged(sent: Any, timeout_s: float) -> bool:
    """True if the broker acknowledged a QoS 1 publish (paho ``MQTTMessageInfo``) in time."""
    try:
        sent.wait_for_publish(timeout_s)
    except (RuntimeError, ValueError):  # not queued (connection lost)
        return False
    return bool(sent.is_published())


def _hex_serial(cert_path: Path) -> str:
    return format(pki.load_cert(cert_path).serial_number, "x")


def _not_after(cert_path: Path) -> str:
    return pki.load_cert(cert_path).not_valid_after_utc.isoformat()


@dataclass(frozen=True)
class Enrolled:
    """What :meth:`Site.enroll` did: the new boxes' bundles, and the boxes already enrolled."""

    bundles: list[Path]
    already: list[str]
    """One line per request skipped because its box is already enrolled at that seat."""


@dataclass(frozen=True)
class Cut:
    """Whether a box's live connection was cut (its session taken over), and if not, why."""

    done: bool
    why: str = ""
    """What became of the connection that cuts it: refused, closed by the broker, not reached."""


@dataclass(frozen=True)
class RevokeResult:
    """What :meth:`Site.revoke` did, with its timings in seconds."""

    box: str
    serials: list[str]
    kicked: bool
    duration_s: float
    status_cleared: bool = False
    """The box's retained status was removed from the broker (subscribers no longer get it)."""
    revoked_before_ts: float | None = None
    """When an earlier run revoked the box (its record keeps that time), else None."""
    refused_after_s: float | None = None
    """How long after the broker's reload its certificate was first refused (None: not tried)."""
    not_cut: str = ""
    """Why its live connection was not cut, when the cut was tried and failed (:class:`Cut`)."""


@dataclass(frozen=True)
class FinishResult:
    """What :meth:`Site.finish_rotation` did."""

    serials: list[str]
    """The old certificates revoked (empty: no rotation waited for its finish, nothing done)."""
    kicked: bool
    """The box's live connection was cut (its session taken over), as :class:`RevokeResult`'s."""
    not_cut: str = ""
    """Why it was not, when the cut was tried and failed (:class:`Cut`)."""


class Site:
    """An initialised site directory."""

    def __init__(self, dir: Path) -> None:
        self.dir = Path(dir)
        path = self.dir / SITE_FILE
        if not path.exists():
            raise SiteError(f"{self.dir} is not a site directory (no {SITE_FILE}; "
                            "run `miroir provision site-init --site-dir "
                            f"{shlex.quote(str(self.dir.absolute()))} --site ID --broker-host "
                            "HOST` first)")
        try:
            data = json.loads(path.read_text())
            self.site: str = wire.check_id(data["site"], "site")
            self.broker_host: str = data["broker_host"]
            self.port: int = int(data["port"])
            self.bind: str = data["bind"]
            self.admin_host: str = data.get("admin_host", "localhost")
            self.hosts: list[str] = list(data.get("hosts") or [self.broker_host, *SERVER_HOSTS])
        except (ValueError, KeyError, TypeError) as exc:
            raise SiteError(f"{path} is damaged ({type(exc).__name__}: {exc}); "
                            f"{pki.RESTORE}") from None
        self.ca = CertPair(self.dir / "ca" / pki.CERT_FILE, self.dir / "ca" / pki.KEY_FILE)
        self.server = CertPair(self.dir / "broker" / pki.CERT_FILE, self.dir / "broker" / pki.KEY_FILE)
        self.dashboard = CertPair(self.dir / "dashboard" / pki.CERT_FILE,
                                  self.dir / "dashboard" / pki.KEY_FILE)
        self.acl = self.dir / ACL_FILE
        self.crl = self.dir / CRL_FILE
        self.config = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"

    # -- paths ---------------------------------------------------------------------------

    def box_pair(self, box: str) -> CertPair:
        """The current certificate and key of a box."""
        d = self.dir / "boxes" / box
        return CertPair(d / pki.CERT_FILE, d / pki.KEY_FILE)

    def command(self, name: str, *args: str) -> str:
        """The command line ``miroir provision NAME`` on this site, as typed in a shell from any
        folder (``args`` as they are: box ids, placeholders, a ``~`` for the shell)."""
        return " ".join(["miroir provision", name, "--site-dir",
                         shlex.quote(str(self.dir.absolute())), *args])

    def bundle_path(self, box: str) -> Path:
        """The first-boot bundle of a box."""
        return self.dir / "bundles" / f"{box}.json"

    def inventory(self) -> Inventory:
        """The site's inventory as stored now."""
        return Inventory.load(self.dir, self.site)

    # -- access control ------------------------------------------------------------------

    def write_acl(self, revoked: Sequence[str]) -> Path:
        """Regenerate the ACL: the base rules, then one ``topic deny #`` block per revoked box."""
        tmp = Path(tempfile.mkstemp(dir=self.dir, prefix=".acl.")[1])
        try:
            write_acl(tmp, self.site)
            extra = ["", "# Revoked boxes: every topic denied (deny lines win over patterns)."]
            for box in revoked:
                extra += [f"user {box}", "topic deny #"]
            extra.append(f"user {admin_identity(self.site)}")
            extra.append("topic deny #")
            with open(tmp, "a") as fh:
                fh.write("\n".join(extra) + "\n")
            tmp.chmod(0o644)
            os.replace(tmp, self.acl)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self.acl

    def _until_read(self, read: Callable[[], bool], unread: str, unasked: str, reload: Reload,
                    done: str, again: str, timeout_s: float) -> float:
        """Ask the broker ``read`` every :data:`CONFIRM_RETRY_S` until it answers True (its
        reload has read the site's files) and return how long that took, in seconds.

        Raises:
            SiteError: still False (``unread``), or the broker could not be asked (``unasked``,
                with the error; whether it read the files is then said unconfirmed), after
                ``timeout_s``: the message says so, what is ``done`` and the command to run
                ``again`` with the options of ``reload``.
        """
        start = time.monotonic()
        while True:
            try:
                if read():
                    return time.monotonic() - start
                why, asked = unread, True
            except OSError as exc:
                why, asked = f"{unasked} ({exc})", False
            if time.monotonic() - start >= timeout_s:
                raise SiteError(
                    f"the broker at {self.admin_host}:{self.port} {why} {timeout_s:.0f} s after "
                    f"its reload (its log, {self.log}, says whether it reloaded): "
                    + _not_read(reload, done, again, asked=asked))
            time.sleep(CONFIRM_RETRY_S)

    def _refused_after(self, check: CertPair, what: str, reload: Reload, done: str, again: str,
                       timeout_s: float = CONFIRM_TIMEOUT_S) -> float:
        """Try ``check``, a certificate revoked in the same CRL as ``what`` (a box's revoked or
        old certificates), on the broker until it refuses it as revoked (the reload has read that
        CRL, so those are refused too; a connection closed for another reason, the broker's
        max_connections reached say, is no answer: :func:`lets_in`), and return how long that
        took, in seconds. (A box's own certificate would take the box's session over, as the
        broker names a client after its CN, and cut it at each try.)

        Raises:
            SiteError: still let in, or the broker could not be asked, after ``timeout_s``
                (:meth:`_until_read`).
        """
        took = self._until_read(
            lambda: not lets_in(self.admin_host, self.port, self.ca.cert, check,
                                check_identity(self.site)),
            f"still let {what} in", f"could not be asked about {what}", reload, done, again,
            timeout_s)
        log.info("%s refused %.3f s after the reload", what, took)
        return took

    def _serves_new(self, reload: Reload, done: str, again: str,
                    timeout_s: float = CONFIRM_TIMEOUT_S) -> float:
        """Wait until the broker serves the certificate in the site's files (its reload has read
        it) and return how long that took, in seconds.

        Raises:
            SiteError: it still serves another, or could not be asked, after ``timeout_s``
                (:meth:`_until_read`).
        """
        serial = pki.load_cert(self.server.cert).serial_number
        took = self._until_read(
            lambda: served_serial(self.admin_host, self.port, self.ca.cert,
                                  self.dashboard) == serial,
            "still served its old certificate", "could not be asked which certificate it serves",
            reload, done, again, timeout_s)
        log.info("the broker serves its new certificate %.3f s after the reload", took)
        return took

    def kick(self, box: str, timeout_s: float = KICK_TIMEOUT_S) -> Cut:
        """Close a box's live MQTT connection: connect once as the box, with a certificate issued
        for its CN now (the broker names the client after it, so the box's session is taken over),
        then revoke that certificate. Call once the box's own certificates are revoked.

        Returns:
            Whether the broker accepted the takeover (any box connection is then closed), and if
            not, why.
        """
        return self._take_over(box, timeout_s, clear_status=False)[0]

    def _take_over(self, box: str, timeout_s: float = KICK_TIMEOUT_S, *,
                   clear_status: bool) -> tuple[Cut, bool]:
        """:meth:`kick`, and with ``clear_status`` remove the box's retained status from the
        broker as the box itself (an empty retained message), while its ACL still lets it.

        Returns:
            Whether the takeover was accepted (and if not, why), and whether the broker
            acknowledged the clearing.
        """
        import threading

        done = threading.Event()
        ok: list[bool] = []
        why = f"no answer from the broker within {timeout_s:g} s"
        cleared = False

        def on_connect(client: object, userdata: object, flags: object, reason: object,
                       props: object) -> None:
            nonlocal why
            ok.append(not getattr(reason, "is_failure", True))
            why = f"the broker refused the connection that cuts it: {reason}"
            done.set()

        stage = Path(tempfile.mkdtemp(prefix=".kick-", dir=self.dir))  # 0700
        try:
            pair = pki.issue(self.ca, stage, box, days=KICK_CERT_DAYS)
            client = tls_client(pair, self.ca.cert, box)
            client.on_connect = on_connect
            try:
                client.connect(self.admin_host, self.port, keepalive=10)
            except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
                # reached: it closed the connection (its max_connections, say), its log says why
                why = (f"the broker closed the connection that cuts it: {exc}; its log, "
                       f"{self.log}, says why")
                log.warning("could not cut %s off: %s", box, why)
            except OSError as exc:
                why = f"the broker could not be reached at {self.admin_host}:{self.port}: {exc}"
                log.warning("could not cut %s off: %s", box, why)
            else:
                client.loop_start()
                try:
                    done.wait(timeout_s)
                    if clear_status and ok and ok[0]:
                        sent = client.publish(wire.topic(self.site, box, "status"), b"", qos=1,
                                              retain=True)
                        cleared = _acknowledged(sent, timeout_s)
                finally:
                    client.disconnect()
                    client.loop_stop()
            pki.revoke(self.ca, self.crl, [pair.cert])  # read at the broker's next reload
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        cut = bool(ok and ok[0])
        return Cut(cut, "" if cut else why), cleared

    # -- operations ----------------------------------------------------------------------

    def check(self, items: Sequence[Enrolment]) -> list[str]:
        """The problems of enrolling ``items`` now (ids, labels, duplicates, revoked ids, boxes
        enrolled at another seat, seats already taken), each naming its line or box; empty when
        there are none. A box already enrolled at the same seat is no problem (:meth:`enroll`
        skips it), so a file can be run again."""
        inv = self.inventory()
        problems: list[str] = []
        seats = {b.seat: b.box for b in inv.boxes.values() if b.state == ACTIVE}
        seen: set[str] = set()
        for item in items:
            where = item.where
            problems += check_enrolment(item, where)
            rec = inv.boxes.get(item.box)
            if rec is not None and rec.state == REVOKED:
                problems.append(f"{where}: box {item.box!r} was revoked and its id is not used "
                                "again; enrol the box under a new box id")
            elif rec is not None and rec.seat != item.seat:
                problems.append(f"{where}: box {item.box!r} is already enrolled at seat "
                                f"{rec.seat!r}, not {item.seat!r}; fix the row (a box moved to "
                                "another seat keeps its enrolment: tell the dashboard with "
                                "`miroir dashboard import CSV`)")
            if item.seat in seats and seats[item.seat] != item.box:
                problems.append(f"{where}: seat {item.seat!r} is already taken by box "
                                f"{seats[item.seat]!r}")
            if item.box in seen:
                problems.append(f"{where}: box {item.box!r} appears twice")
            seen.add(item.box)
            seats.setdefault(item.seat, item.box)
        return problems

    @staticmethod
    def already_enrolled(item: Enrolment, inv: Inventory) -> str | None:
        """How ``item`` is already enrolled at its seat in ``inv``, for the operator; None if it
        is not."""
        rec = inv.boxes.get(item.box)
        if rec is None or rec.state != ACTIVE or rec.seat != item.seat:
            return None
        note = f"{item.where}: box {item.box!r} is already enrolled at seat {rec.seat!r}; skipped"
        differ = [f"{name} {getattr(rec, name)!r}" for name in ("agent", "team")
                  if getattr(item, name) and getattr(item, name) != getattr(rec, name)]
        if differ:
            note += (f" (the site's inventory keeps {' and '.join(differ)}; the dashboard takes "
                     "agents and teams from `miroir dashboard import CSV`)")
        return note

    @_exclusive
    def enroll(self, items: Sequence[Enrolment], *, days: int = BOX_CERT_DAYS) -> Enrolled:
        """Enrol boxes: key, certificate, settings and first-boot bundle each; all or nothing.

        Every request is checked first (:meth:`check`); any problem raises
        :class:`InventoryError` listing them all and nothing is written. A box already enrolled at
        the same seat is skipped (its key and bundle stay). Files are then made in a staging
        folder and moved into place; the inventory, written last and atomically, is the commit.

        Returns:
            The new bundles' paths in request order, and a note for each box skipped.
        """
        problems = self.check(items)
        if problems:
            raise InventoryError(problems)
        inv = self.inventory()
        notes = {item.box: note for item in items if (note := self.already_enrolled(item, inv))}
        items = [item for item in items if item.box not in notes]
        if not items:
            return Enrolled([], list(notes.values()))
        stage = Path(tempfile.mkdtemp(prefix=".enroll-", dir=self.dir))
        moved: list[Path] = []
        try:
            records = []
            for item in items:
                pair = pki.issue(self.ca, stage / "boxes" / item.box, item.box, days=days)
                (stage / "bundles").mkdir(exist_ok=True)
                self._bundle(stage / "bundles" / f"{item.box}.json", item.box, item.seat, pair)
                records.append(BoxRecord(box=item.box, seat=item.seat, agent=item.agent,
                                         team=item.team, serial=_hex_serial(pair.cert),
                                         not_after=_not_after(pair.cert), enrolled_ts=time.time()))
            for sub in ("boxes", "bundles"):
                private_dir(self.dir / sub)
            for item in items:
                for src, dst in (
                    (stage / "boxes" / item.box, self.dir / "boxes" / item.box),
                    (stage / "bundles" / f"{item.box}.json", self.bundle_path(item.box)),
                    (stage / "bundles" / f"{item.box}.json.sha256",
                     Path(f"{self.bundle_path(item.box)}.sha256")),
                ):
                    if dst.is_dir():
                        shutil.rmtree(dst)  # an orphan of an earlier, interrupted enrolment
                    os.replace(src, dst)
                    moved.append(dst)
            for rec in records:
                inv.boxes[rec.box] = rec
            inv.save(self.dir)
        except BaseException:
            for path in moved:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(
                    missing_ok=True)
            raise
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        log.info("enrolled %d box(es) in site %s (%d already were)", len(items), self.site,
                 len(notes))
        return Enrolled([self.bundle_path(item.box) for item in items], list(notes.values()))

    def _bundle(self, path: Path, box: str, seat: str, pair: CertPair) -> Path:
        return bundle_mod.write_bundle(
            path, site=self.site, box=box, seat=seat,
            settings_toml=bundle_mod.box_settings_toml(self.site, box, self.broker_host, self.port),
            ca_pem=self.ca.cert.read_text(), cert_pem=pair.cert.read_text(),
            key_pem=pair.key.read_text())

    @_exclusive
    def revoke(self, box: str, reload: Reload, *, kick: bool = True,
               confirm: bool = True) -> RevokeResult:
        """Revoke a box: CRL, ACL deny, broker reload, the revoked certificate seen refused by the
        broker, and its live connection cut.

        Args:
            box: Box id.
            reload: Makes the running broker re-read its CRL and ACL (:func:`systemctl_reload`,
                :func:`signal_reload`).
            kick: Also close the box's live connection (session takeover).
            confirm: Wait until the broker refuses the box's certificate: a one-time
                certificate (:func:`check_identity`, valid 10 minutes, its key never written
                outside a 0700 staging folder) is revoked with it and tried until refused
                (:meth:`_refused_after`); not refused in time, the box is not cut (it would be
                back at once) and :class:`SiteError` says so once the ACL is reloaded too.

        Returns:
            What was done and how long it took.
        """
        start = time.monotonic()
        inv = self.inventory()
        try:
            rec = inv.get(box)
        except KeyError as exc:
            raise SiteError(str(exc.args[0])) from None
        pair = self.box_pair(box)
        certs = [pair.cert, *sorted((pair.cert.parent / "old").glob("*.pem"))]
        before = rec.revoked_ts if rec.state == REVOKED else None
        with tempfile.TemporaryDirectory(prefix=".check-", dir=self.dir) as stage:  # 0700
            check = pki.issue(self.ca, Path(stage), check_identity(self.site),
                              days=KICK_CERT_DAYS) if confirm else None
            pki.revoke(self.ca, self.crl, [*certs, *([check.cert] if check else [])])
            if before is None:  # a run again (its reload failed, say) keeps when it was revoked
                rec.state = REVOKED
                rec.revoked_ts = time.time()
                inv.save(self.dir)
            bundle = self.bundle_path(box)
            for path in (bundle, Path(f"{bundle}.sha256")):
                path.unlink(missing_ok=True)  # the key inside is now worthless; do not hand it out
            kicked = cleared = False
            not_cut = ""
            reload_now = functools.partial(_reload_for, reload, f"box {box} is revoked",
                                           self.command("revoke", box))
            refused_s: float | None = None
            unread: SiteError | None = None

            def confirmed() -> bool:
                nonlocal refused_s, unread
                try:
                    refused_s = self._refused_after(
                        check, f"box {box}'s revoked certificate", reload, f"box {box} is revoked",
                        self.command("revoke", box)) if check else None
                except SiteError as exc:
                    unread = exc
                return unread is None

            try:
                if kick:
                    # its ACL still lets it write, even when a run cut short by a failed reload
                    # has denied it already: the status is cleared as the box, before the deny
                    self.write_acl([b for b in inv.revoked() if b != box])
                    reload_now()  # the CRL: the box can no longer connect
                    if confirmed():  # (cut while the broker lets it in, it would be back at once)
                        cut, cleared = self._take_over(box, clear_status=True)
                        kicked, not_cut = cut.done, cut.why
            finally:
                self.write_acl(inv.revoked())  # (even if that reload failed)
            reload_now()  # the ACL: denied every topic (a Last Will too)
            if not kick:
                confirmed()
        if unread is not None:
            raise unread
        serials = [_hex_serial(c) for c in certs]
        log.info("revoked box %s (serials %s); kicked: %s; retained status cleared: %s", box,
                 ", ".join(serials), kicked, cleared)
        return RevokeResult(box, serials, kicked, time.monotonic() - start, cleared, before,
                            refused_s, not_cut)

    @_exclusive
    def rotate(self, box: str, *, days: int = BOX_CERT_DAYS, again: bool = False) -> Path:
        """Give a box a new key and certificate and a new bundle; the old one stays valid.

        The old certificate is kept in ``boxes/<box>/old/`` and keeps working until
        :meth:`finish_rotation`, so the box never loses the broker while it switches. While a
        rotation waits for its finish, another is refused (:class:`SiteError`, nothing written)
        unless ``again``: its bundle may be on the box already, and the finish would revoke it.

        Returns:
            The new bundle's path.
        """
        inv = self.inventory()
        try:
            rec = inv.get(box)
        except KeyError as exc:
            raise SiteError(str(exc.args[0])) from None
        if rec.state != ACTIVE:
            raise SiteError(f"box {box} is {rec.state}; enrol a new box id instead")
        if rec.previous_serials and not again:
            raise SiteError(
                f"box {box} already has a new certificate waiting, in {self.bundle_path(box)}: "
                f"put that bundle on the box, then run `{self.command('rotate', box, '--finish')}` "
                "(nothing changed); --again makes another one, and the box must then get the "
                "newest bundle before the finish, which cuts off the ones before")
        current = self.box_pair(box)
        stage = Path(tempfile.mkdtemp(prefix=".rotate-", dir=self.dir))
        try:
            pair = pki.issue(self.ca, stage / "new", box, days=days)
            new_bundle = self._bundle(stage / "bundle.json", box, rec.seat, pair)
            old_dir = current.cert.parent / "old"
            private_dir(old_dir)
            shutil.copy2(current.cert, old_dir / f"{rec.serial}.pem")
            os.replace(pair.key, current.key)
            os.replace(pair.cert, current.cert)
            os.replace(new_bundle, self.bundle_path(box))
            os.replace(f"{new_bundle}.sha256", f"{self.bundle_path(box)}.sha256")
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        rec.previous_serials.append(rec.serial)
        rec.serial = _hex_serial(current.cert)
        rec.not_after = _not_after(current.cert)
        inv.save(self.dir)
        log.info("rotated box %s: new serial %s", box, rec.serial)
        return self.bundle_path(box)

    @_exclusive
    def renew(self, reload: Reload, *, days: int = BOX_CERT_DAYS,
              confirm: bool = True) -> dict[str, str]:
        """New keys and certificates for the broker and the dashboard (same names), the CRL signed
        again until the CA expires, the private folders and inventory closed (:func:`make_private`)
        and the broker's configuration written as this version does;
        the broker reloads (SIGHUP takes the new certificate; open connections carry on) and,
        with ``confirm``, is seen serving the new one (:class:`SiteError` if it does not within
        :data:`CONFIRM_TIMEOUT_S`). The dashboard uses its new identity once restarted.

        Returns:
            The new expiry of each, ISO 8601: ``broker``, ``dashboard``, ``crl``.
        """
        stage = Path(tempfile.mkdtemp(prefix=".renew-", dir=self.dir))
        try:
            server = pki.issue(self.ca, stage / "broker", self.hosts[0], server=True,
                               hosts=self.hosts, days=days)
            dashboard = pki.issue(self.ca, stage / "dashboard", dashboard_identity(self.site),
                                  days=days)
            for new, old in ((server, self.server), (dashboard, self.dashboard)):
                was = old.key.stat()  # the broker's group reads its key: keep owners and modes
                with contextlib.suppress(PermissionError):  # not root: the caller's own files
                    os.chown(new.key, was.st_uid, was.st_gid)
                new.key.chmod(was.st_mode & 0o777)
                os.replace(new.key, old.key)
                os.replace(new.cert, old.cert)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        pki.revoke(self.ca, self.crl, [])
        make_private(self.dir)  # a site made by an older version left them readable
        # and the broker's configuration as this version writes it (a site made earlier gets its
        # hardening, e.g. client ids bound to certificates)
        write_config(self.dir, port=self.port, ca=self.ca, server=self.server, acl=self.acl,
                     host=self.bind, crl=self.crl)
        done = "the broker's and the dashboard's new certificates are"
        _reload_for(reload, done, self.command("renew"))
        if confirm:
            self._serves_new(reload, done, self.command("renew"))
        crl = pki.load_crl(self.crl)
        out = {"broker": _not_after(self.server.cert), "dashboard": _not_after(self.dashboard.cert),
               "crl": crl.next_update_utc.isoformat() if crl.next_update_utc else ""}
        log.info("renewed the broker's and the dashboard's certificates and the CRL: %s", out)
        return out

    @_exclusive
    def finish_rotation(self, box: str, reload: Reload, *, kick: bool = True,
                        confirm: bool = True) -> FinishResult:
        """Revoke a box's rotated-out certificates (once it runs with the new one).

        A connection still open with an old certificate (the old key in other hands) would outlive
        the reload: with ``kick`` the box's connection is closed (:meth:`kick`), and the box
        reconnects within seconds with its new certificate, the only one the broker takes.
        With no rotation waiting for its finish (a finish run again), nothing is done and the
        list is empty; a finish whose reload failed still waits, and its run again does it all.
        With ``confirm``, as :meth:`revoke` does, the finish waits until the broker refuses a
        one-time certificate revoked with the old ones (:class:`SiteError` if it does not within
        :data:`CONFIRM_TIMEOUT_S`: the rotation then still waits, and the box is not cut).
        Whether the cut was made is in the result (``kicked``), as :meth:`revoke` gives it.
        """
        inv = self.inventory()
        try:
            rec = inv.get(box)
        except KeyError as exc:
            raise SiteError(str(exc.args[0])) from None
        old = sorted((self.box_pair(box).cert.parent / "old").glob("*.pem"))
        if not old or not rec.previous_serials:
            log.info("box %s: no rotation waits for its finish; nothing done", box)
            return FinishResult([], False)
        done = f"box {box}'s old certificate(s) are revoked"
        again = self.command("rotate", box, "--finish")
        with tempfile.TemporaryDirectory(prefix=".check-", dir=self.dir) as stage:  # 0700
            check = pki.issue(self.ca, Path(stage), check_identity(self.site),
                              days=KICK_CERT_DAYS) if confirm else None
            pki.revoke(self.ca, self.crl, [*old, *([check.cert] if check else [])])
            serials = [_hex_serial(p) for p in old]
            _reload_for(reload, done, again)
            if check is not None:
                self._refused_after(check, f"box {box}'s old certificate(s)", reload, done, again)
        rec.previous_serials = []  # finished once the broker has read them
        inv.save(self.dir)
        cut = self.kick(box) if kick else Cut(False)
        log.info("finished box %s's rotation (serials %s); kicked: %s", box, ", ".join(serials),
                 cut.done)
        return FinishResult(serials, cut.done, cut.why)


def init_site(dir: Path, site: str, *, broker_host: str, port: int = DEFAULT_PORT,
              bind: str = "0.0.0.0", extra_hosts: Sequence[str] = (),
              admin_user: str = "admin", admin_host: str | None = None,
              credentials_dir: str = "/run/credentials/miroir-dashboard.service") -> Site:
    """Create a site directory: CA, broker certificate and config, ACL, CRL, identities.

    Args:
        dir: New or empty directory (as root, it must be traversable by the ``mosquitto`` user).
        site: Site id, ``[a-z0-9-]{1,32}``.
        broker_host: Name or address the boxes use to reach the broker (in its certificate).
        port: TLS port of the broker.
        bind: Address the broker listens on.
        extra_hosts: More names or addresses for the broker certificate.
        admin_user: Name of the dashboard's first admin account.
        admin_host: Name the provisioning tool and the dashboard on the site server use to reach
            the broker (in its certificate); default ``localhost``, or ``bind`` when the broker
            listens on one address only.
        credentials_dir: Where the dashboard's unit exposes its credentials.

    Returns:
        The new site.
    """
    wire.check_id(site, "site")
    check_admin_user(admin_user)
    for what, host in (("broker host", broker_host), ("bind address", bind),
                       *(("extra host", h) for h in extra_hosts),
                       *((("admin host", admin_host),) if admin_host else ())):
        check_host(host, what)
    if not 1 <= port <= 65535:
        raise SiteError(f"port {port} is outside 1..65535")
    for option, host in (("--broker-host", broker_host), *(("--extra-host", h) for h in extra_hosts)):
        check_reachable(bind, host, option)
    dir = Path(dir)
    if (dir / SITE_FILE).exists():
        raise SiteError(f"{dir} already holds a site ({SITE_FILE}); refusing to overwrite its CA")
    if dir.exists() and any(p for p in dir.iterdir() if not p.name.startswith(".")):
        raise SiteError(f"{dir} is not empty")
    dir.mkdir(parents=True, exist_ok=True)
    dir.chmod(0o755)
    if admin_host is None:
        admin_host = "localhost" if bind in ("0.0.0.0", "::", "127.0.0.1", "localhost") else bind
    hosts = list(dict.fromkeys([broker_host, *extra_hosts, admin_host, *SERVER_HOSTS]))
    files = make_site(dir, site, [], port=port, hosts=hosts, bind=bind)
    (dir / "ca").chmod(0o755)  # the CA key inside is 0600; the broker reads the certificate
    crl = pki.revoke(files.ca, dir / CRL_FILE, [])
    make_private(dir)
    for sub in ("boxes", "bundles"):
        private_dir(dir / sub)
    meta = {"site": site, "broker_host": broker_host, "port": port, "bind": bind,
            "admin_host": admin_host, "hosts": hosts,
            "created": dt.datetime.now(dt.UTC).isoformat()}
    atomic_write(dir / SITE_FILE, (json.dumps(meta, indent=1) + "\n").encode(), mode=0o644)
    s = Site(dir)
    s.write_acl([])
    write_config(dir, port=port, ca=files.ca, server=files.server, acl=s.acl, host=bind, crl=crl)
    password = secrets.token_urlsafe(18)
    atomic_write(dir / "admin-password", (password + "\n").encode(), mode=0o600)
    env = [
        f"MIROIR_DASH_SITE={site}",
        "MIROIR_DASH_DB_PATH=/var/lib/miroir-dashboard/dashboard.sqlite",
        f"MIROIR_DASH_MQTT_HOST={admin_host}",
        f"MIROIR_DASH_MQTT_PORT={port}",
        f"MIROIR_DASH_MQTT_CA={credentials_dir}/ca.pem",
        f"MIROIR_DASH_MQTT_CERT={credentials_dir}/dashboard.pem",
        f"MIROIR_DASH_MQTT_KEY={credentials_dir}/dashboard.key",
        f"MIROIR_DASH_ADMIN_USER={admin_user}",
        f"MIROIR_DASH_ADMIN_PASSWORD_FILE={credentials_dir}/admin-password",
    ]
    atomic_write(dir / "dashboard.env", ("\n".join(env) + "\n").encode(), mode=0o644)
    Inventory(site).save(dir)
    (dir / LOCK_FILE).touch(mode=0o600)  # (site commands lock it; made now, so they write nothing)
    log.info("site %s initialised in %s (dashboard identity %s)", site, dir,
             dashboard_identity(site))
    return s


__all__ = ["Enrolled", "RevokeResult", "Site", "SiteError", "admin_identity", "check_admin_user",
           "check_identity", "init_site",
           "make_private", "private_dir",
           "signal_reload", "site_lock", "systemctl_reload"]

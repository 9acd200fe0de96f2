"""Signed over-the-air updates with automatic rollback.

A release bundle is one file::

    b"MIROIR-RELEASE/1\\n" | u32 big-endian manifest length | manifest (JSON)
    | 64-byte Ed25519 signature over magic + manifest | payload (tar.gz of the release tree)

The manifest names the version and the payload's SHA-256 and length. Installing:

1. **verify** the signature with the vendor's public key and hash the payload, reading only:
   a tampered bundle is rejected before anything is written;
2. **unpack** into ``<root>/releases/.staging-<version>`` and rename it to ``releases/<version>``,
   once the running release shows it reaches the broker (a message acknowledged after the install
   began): without the broker no release can pass step 4, so nothing is written rather than a
   good release rolled back as a bad one;
3. **switch**: record ``state.json`` ``{"pending": new, "previous": old}`` (atomic rename), then
   swap the ``current`` symlink atomically (a new link renamed over the old one);
4. **health-check** (the agent restarted on the new release reaches the broker, publishes, and
   runs a while without a restart: ``edge.health.wait_healthy``);
5. **commit** (``state.json`` cleared) or **roll back** (``current`` back to the previous release,
   recorded as the release's failure before the state is cleared); the record is taken back if
   the release put back does not reach the broker either (the broker went away during the check:
   :class:`BrokerUnreachable`), so an update killed while that is checked still leaves it.

A power cut or kill at any point leaves ``current`` pointing to a complete release. At boot,
:func:`recover` (``miroir-update-recover.service``, and again before every start of the agent:
``miroir-box.service``'s ``ExecStartPre``) removes staging leftovers and rolls back a switch
that no live install is checking (one killed after its switch: the kernel dropped its lock).
An install refuses a version not newer than the one running (a replayed old bundle) unless
told otherwise, unpacks only plain files, folders and symbolic links that stay inside the
release (its own check, not tarfile's filters), within size caps, and holds a lock on the
root: one install or recovery at a time. Releases are deleted by
renaming them away first, so a half-deleted one is never taken for complete. Verification needs
``cryptography`` and installs the version order (``miroir.versions``); recovery needs only the
standard library (the image runs this file alone with the system Python).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import struct
import sys
import tarfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

log = logging.getLogger(__name__)

MAGIC = b"MIROIR-RELEASE/1\n"
SIG_BYTES = 64
"""Length of the Ed25519 signature after the manifest."""
MAX_MANIFEST_BYTES = 64 * 1024
"""Largest manifest read from a package: a length field above it is a corrupt or hostile file."""
CHUNK = 1 << 20
STATE_FILE = "state.json"
ROLLED_BACK_FILE = "rolled-back.json"
"""The last release rolled back (``{"version", "ts", "running"}``), kept until an update is
committed: the box's status carries it to the IT page (:func:`rolled_back`)."""
CURRENT = "current"
RELEASES = "releases"
COMPLETE_MARK = ".complete"
LOCK_FILE = ".lock"
MAX_PAYLOAD_BYTES = 512 * 1024 * 1024
"""Largest compressed payload accepted (it is read into memory to unpack)."""
MAX_RELEASE_BYTES = 2 * 1024 * 1024 * 1024
"""Largest unpacked release (the data partition also holds the outbox)."""
FREE_MARGIN_BYTES = 256 * 1024 * 1024
"""Space left free on the partition after unpacking."""

HealthCheck = Callable[[str], bool]
"""Called with the new version after the switch; True when the agent runs well on it."""
Restart = Callable[[], None]
BrokerCheck = Callable[[float], bool]
"""Called with a time (seconds since the epoch); True when the agent running now has a message
acknowledged by the broker after it, waiting a bounded time for one."""


class UpdateError(RuntimeError):
    """An update refused (bad signature, wrong payload, unsafe archive) or that failed."""


class RolledBack(UpdateError):
    """A release switched to, then rolled back (failed health check, interrupted)."""


class BrokerUnreachable(UpdateError):
    """The release could not be checked because the box does not reach the broker: refused with
    nothing changed, or switched to and back when the previous release cannot reach it either."""


@dataclass(frozen=True)
class Manifest:
    """What a release bundle claims, once its signature is verified."""

    version: str
    payload_sha256: str
    payload_bytes: int
    payload_offset: int


def _check_version(version: object) -> str:
    if not isinstance(version, str) or not version or len(version) > 64 or not all(
            c.isalnum() or c in ".-+_" for c in version) or version.startswith("."):
        raise UpdateError(f"bad release version {version!r}")
    return version


def rolled_back(root: Path) -> dict[str, Any] | None:
    """The last release rolled back under ``root`` (``version``, ``ts``: seconds since the epoch,
    ``running``), None when the last update held or none was rolled back."""
    try:
        data = json.loads((Path(root) / ROLLED_BACK_FILE).read_text())
    except (OSError, ValueError, RecursionError):  # (nested too deep: a corrupt card)
        return None
    ok = isinstance(data, dict) and isinstance(data.get("version"), str) \
        and isinstance(data.get("ts"), int | float)
    return data if ok else None


INSTALL_ROOTS = ("/data/miroir-releases", "/opt/miroir")
"""Where a box keeps its releases (``/opt/miroir`` is a link to the first)."""


def _shebang_interpreter(script: Path) -> str | None:
    """The interpreter a script names: its ``#!`` line, or the one pip writes behind ``#!/bin/sh``
    when the path is too long for a ``#!`` line (an ``exec`` of ``/path/python "$0" "$@"``)."""
    try:
        with open(script, "rb") as fh:
            head = fh.read(4096).decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    if not head or not head[0].startswith("#!") or not head[0][2:].split():
        return None
    interpreter = head[0][2:].split()[0]
    if interpreter == "/bin/sh" and len(head) > 1 and head[1].startswith("'''exec' "):
        interpreter = head[1].split()[1]
    return interpreter


def check_release_tree(tree: Path, version: str) -> None:
    """Refuse a release tree that could not work once installed as ``releases/<version>``.

    * A venv's entry points (``bin/miroir``...) name their interpreter by absolute path, the
      path the venv was built at: the release runs only if that is where the box installs it,
      ``/data/miroir-releases/releases/<version>`` (or the same through ``/opt/miroir``).
    * The box's health check waits for a heartbeat of the signed version, and the agent reports
      its ``miroir.__version__``: if they differ, the update is always rolled back.

    Raises:
        UpdateError: naming the script or the version at fault.
    """
    tree = Path(tree)
    for cfg in sorted(tree.rglob("pyvenv.cfg")):
        venv = cfg.parent
        inside = PurePosixPath(venv.relative_to(tree).as_posix())
        homes = {PurePosixPath(root) / RELEASES / version / inside for root in INSTALL_ROOTS}
        bindir = venv / "bin"
        for script in sorted(bindir.iterdir()) if bindir.is_dir() else []:
            if script.is_symlink() or not script.is_file():
                continue
            interpreter = _shebang_interpreter(script)
            if interpreter is None or not interpreter.startswith("/"):
                continue
            path = PurePosixPath(interpreter)
            if (path.name.startswith("python") and path.parent.name == "bin"
                    and path.parent.parent not in homes):
                raise UpdateError(
                    f"{script.relative_to(tree)} runs {interpreter}: a venv's scripts name the "
                    "interpreter of the place the venv was built, and the box installs this "
                    f"release at {PurePosixPath(INSTALL_ROOTS[0]) / RELEASES / version / inside}"
                    ": build the venv at that path")
    for init in sorted(tree.glob("**/site-packages/miroir/__init__.py")):
        text = init.read_text(encoding="utf-8", errors="replace")
        found = next((line.split("=", 1)[1].strip().strip("\"'") for line in text.splitlines()
                      if line.startswith("__version__")), None)
        if found is not None and found != version:
            raise UpdateError(
                f"the release is signed as {version} but holds miroir {found} "
                f"({init.relative_to(tree)}): the box's health check waits for a heartbeat of "
                f"version {version} and would roll the update back; sign it as {found}")


def build_release(tree: Path, version: str, private_key_pem: bytes, out: Path) -> Path:
    """Pack ``tree`` as release ``version`` and sign it (vendor side, release pipeline).

    The tree is checked first (:func:`check_release_tree`): a venv built elsewhere than the box's
    ``releases/<version>``, or a ``miroir.__version__`` other than ``version``, is refused.

    Args:
        tree: Folder holding the release (venv, units, ``bin/miroir``...).
        version: Release version.
        private_key_pem: Ed25519 private key, PEM PKCS#8 without password.
        out: Bundle file to write.

    Returns:
        ``out``.
    """
    check_release_tree(tree, _check_version(version))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tree, arcname=".")
    return sign_release(buf.getvalue(), version, private_key_pem, out)


def sign_release(payload: bytes, version: str, private_key_pem: bytes, out: Path) -> Path:
    """Write a bundle of an already packed ``payload`` (tar.gz) signed as release ``version``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise UpdateError("the signing key is not an Ed25519 key")
    manifest = json.dumps({"format": "miroir-release/1", "version": _check_version(version),
                           "payload_sha256": hashlib.sha256(payload).hexdigest(),
                           "payload_bytes": len(payload)}, sort_keys=True).encode()
    signature = key.sign(MAGIC + manifest)
    Path(out).write_bytes(MAGIC + struct.pack(">I", len(manifest)) + manifest + signature + payload)
    return Path(out)


def verify_release(bundle: Path, public_key_pem: bytes) -> Manifest:
    """Check a bundle's signature and payload hash, writing nothing; raise :class:`UpdateError`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, Ed25519PublicKey):
        raise UpdateError("the release key is not an Ed25519 public key")
    with open(bundle, "rb") as fh:
        if fh.read(len(MAGIC)) != MAGIC:
            raise UpdateError(f"{bundle}: not a Miroir release bundle")
        head = fh.read(4)
        (length,) = struct.unpack(">I", head.rjust(4, b"\0"))
        if len(head) == 4 and not 0 < length <= MAX_MANIFEST_BYTES:
            raise UpdateError(f"{bundle}: bad manifest length {length}")
        manifest_bytes = fh.read(length)
        signature = fh.read(SIG_BYTES)
        if len(head) < 4 or len(manifest_bytes) < length or len(signature) < SIG_BYTES:
            raise UpdateError(f"{bundle}: truncated ({fh.tell()} of its bytes): copy it again")
        try:
            key.verify(signature, MAGIC + manifest_bytes)
        except InvalidSignature:
            raise UpdateError(f"{bundle}: bad signature (not signed by the release key, "
                              "or the manifest was altered)") from None
        try:
            info = json.loads(manifest_bytes)
            claimed = (info["version"], int(info["payload_bytes"]), str(info["payload_sha256"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise UpdateError(f"{bundle}: malformed manifest ({type(exc).__name__})") from None
        if not 0 < claimed[1] <= MAX_PAYLOAD_BYTES:
            raise UpdateError(f"{bundle}: payload of {claimed[1]} bytes (at most "
                              f"{MAX_PAYLOAD_BYTES})")
        offset = fh.tell()
        digest = hashlib.sha256()
        size = 0
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    if size < info["payload_bytes"]:
        raise UpdateError(f"{bundle}: truncated ({offset + size} of its "
                          f"{offset + info['payload_bytes']} bytes): copy it again")
    if size != info["payload_bytes"] or digest.hexdigest() != info["payload_sha256"]:
        raise UpdateError(f"{bundle}: payload does not match its signed manifest (tampered "
                          "or truncated)")
    return Manifest(_check_version(info["version"]), info["payload_sha256"], size, offset)


class Updater:
    """Side-by-side releases under ``root`` with an atomically switched ``current`` symlink."""

    def __init__(self, root: Path, *, crash_at: str | None = None) -> None:
        self.root = Path(root)
        self.releases = self.root / RELEASES
        self.current = self.root / CURRENT
        self.state_path = self.root / STATE_FILE
        self._crash_at = crash_at or os.environ.get("MIROIR_UPDATE_CRASH_AT")

    # -- state -----------------------------------------------------------------------------

    def current_version(self) -> str | None:
        """Version ``current`` points to, or None before the first install."""
        try:
            return Path(os.readlink(self.current)).name
        except FileNotFoundError:
            return None

    def _state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, RecursionError) as exc:  # (a damaged card, nested too deep
            # included: current is still complete)
            log.error("%s is unreadable (%s): keeping release %s", self.state_path, exc,
                      self.current_version())
            return {}
        return state if isinstance(state, dict) else {}

    def _write_state(self, state: dict[str, Any]) -> None:
        self._write_json(STATE_FILE, state)

    def _write_json(self, name: str, data: dict[str, Any]) -> None:
        """Write ``data`` to ``root/name`` atomically, synced (a power cut leaves the old or the new)."""
        # (the standard library only: the image runs this file on its own, at boot, see above)
        tmp = self.root / f".{name}.tmp"
        with open(tmp, "w") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / name)
        _fsync_dir(self.root)

    def _crash(self, point: str) -> None:
        """Test hook: die by SIGKILL at a named point (simulates a power cut there)."""
        if self._crash_at == point:
            os.kill(os.getpid(), 9)

    def _switch(self, version: str) -> None:
        link = self.root / f".{CURRENT}.new"
        link.unlink(missing_ok=True)
        os.symlink(Path(RELEASES) / version, link)
        os.replace(link, self.current)
        _fsync_dir(self.root)

    @contextlib.contextmanager
    def locked(self, wait: bool = True) -> Iterator[bool]:
        """Hold the root's lock: one install or recovery at a time; yields False, without the
        lock, when another process holds it and ``wait`` is False (the kernel drops the lock of
        a killed process: a held lock is a live install)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                log.warning("another update is in progress on this box (%s): waiting for it to "
                            "end (Ctrl-C gives up, nothing changed yet)", self.root)
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield True
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _remove(self, path: Path) -> None:
        """Delete a release folder: renamed away first, so that a power cut in the middle never
        leaves a half-deleted folder under a release's name (swept by :meth:`recover`)."""
        if not path.exists():
            return
        trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(path, trash)
        _fsync_dir(path.parent)
        shutil.rmtree(trash, ignore_errors=True)

    # -- operations ------------------------------------------------------------------------

    def unpack(self, bundle: Path, manifest: Manifest) -> Path:
        """Unpack a verified payload into ``releases/<version>`` (staged, then renamed).

        Raises:
            UpdateError: an unsafe or damaged archive, or no room for it (nothing is left).
        """
        self.releases.mkdir(parents=True, exist_ok=True)
        final = self.releases / manifest.version
        if self.built_from(manifest.version) == manifest.payload_sha256:
            return final
        stage = self.releases / f".staging-{manifest.version}"
        copy_dir = self.releases / f".staging-{manifest.version}.payload"
        for d in (stage, copy_dir):
            shutil.rmtree(d, ignore_errors=True)
        stage.mkdir()
        try:
            copy_dir.mkdir(mode=0o700)
            payload = _copy_payload(bundle, manifest, copy_dir / "payload.tar.gz")
            with tarfile.open(payload, mode="r:gz") as tar:
                _extract(tar, stage)
                self._crash("unpack")
            (stage / COMPLETE_MARK).write_text(f"{manifest.version}\n{manifest.payload_sha256}\n")
            _fsync_tree(stage)
        except (OSError, tarfile.TarError, EOFError, zlib.error, UpdateError) as exc:
            shutil.rmtree(stage, ignore_errors=True)
            if isinstance(exc, UpdateError):
                raise
            raise UpdateError(f"cannot unpack release {manifest.version}: {exc}") from None
        finally:
            shutil.rmtree(copy_dir, ignore_errors=True)
        self._remove(final)
        os.replace(stage, final)
        _fsync_dir(self.releases)
        return final

    def built_from(self, version: str) -> str | None:
        """SHA-256 of the payload a complete release was unpacked from (None: not complete, or
        marked by a version of this file that did not record it)."""
        try:
            lines = (self.releases / version / COMPLETE_MARK).read_text().split()
        except OSError:
            return None
        return lines[1] if len(lines) > 1 else None

    def install(self, bundle: Path, public_key_pem: bytes, *, restart: Restart,
                health: HealthCheck, allow_downgrade: bool = False,
                broker: BrokerCheck | None = None, even_if_offline: bool = False) -> str:
        """Verify, unpack, switch, health-check, then commit or roll back.

        Args:
            bundle: Release bundle file.
            public_key_pem: The vendor's Ed25519 release key (PEM).
            restart: Restarts the agent on whatever ``current`` points to.
            health: Health check of the new version.
            allow_downgrade: Install a version older than the running one (a deliberate
                return to a release; refused by default, as a replayed old bundle would be).
            broker: Whether the agent running now reaches the broker. Given, the running release
                must show it does before anything is written (unless ``even_if_offline``), and
                a failed check is blamed on the release only if the release put back does.
            even_if_offline: Switch even though the running release does not reach the broker
                (its agent is the one failing); the new one must still publish to be kept.

        Returns:
            The version running afterwards.

        Raises:
            UpdateError: refused (nothing switched; :class:`RolledBack` when rolled back,
                :class:`BrokerUnreachable` when the broker kept it from being checked).
        """
        from miroir.versions import version_key  # not at the top: recovery runs this file alone

        manifest = verify_release(bundle, public_key_pem)  # before anything is written
        with self.locked():
            self._recover()
            old = self.current_version()
            if old == manifest.version:
                if self.built_from(old) not in (None, manifest.payload_sha256):
                    raise UpdateError(f"release {old} is already running from another build: a "
                                      "changed release needs a new version (nothing changed)")
                return old
            if old is not None and not allow_downgrade and \
                    version_key(manifest.version) <= version_key(old):
                raise UpdateError(f"release {manifest.version} is not newer than the running "
                                  f"{old} (a replayed old bundle?); --allow-downgrade to install "
                                  "it anyway")
            if broker is not None and not even_if_offline:
                self._check_broker_first(broker, old, manifest.version)
            self.unpack(bundle, manifest)
            return self._switch_and_check(manifest.version, old, restart, health, broker)

    def previous_version(self) -> str | None:
        """The newest complete release kept besides the running one, or None."""
        from miroir.versions import version_key  # not at the top: recovery runs this file alone

        running = self.current_version()
        kept = [path.name for path in self.releases.glob("[!.]*")
                if path.name != running and (path / COMPLETE_MARK).exists()]
        return max(kept, key=version_key, default=None)

    def go_back(self, *, restart: Restart, health: HealthCheck, broker: BrokerCheck | None = None,
                even_if_offline: bool = False) -> str:
        """Switch to the kept previous release, health-check it, then commit or roll back;
        both releases stay on disk either way (``broker``, ``even_if_offline``: as
        :meth:`install`).

        Raises:
            UpdateError: no previous release kept (:class:`RolledBack`: it failed its check,
                :class:`BrokerUnreachable`: the broker kept it from being checked).
        """
        with self.locked():
            self._recover()
            target = self.previous_version()
            if target is None:
                raise UpdateError("no previous release kept on this box to go back to")
            old = self.current_version()
            if broker is not None and not even_if_offline:
                self._check_broker_first(broker, old, target)
            return self._switch_and_check(target, old, restart, health, broker,
                                          keep_on_failure=True)

    @staticmethod
    def _check_broker_first(broker: BrokerCheck, old: str | None, version: str) -> None:
        """Refuse, before anything is written, when the running release does not reach the
        broker now: the new one could not show it does (its check would fail, whatever it is)."""
        if old is None or broker(time.time()):
            return
        raise BrokerUnreachable(
            f"the box cannot reach the broker now (release {old}, running, had no message "
            f"acknowledged by it), so release {version} could not be checked: nothing changed; "
            "run it again when the broker is back (the agent reconnects within 30 s of its "
            "return); if the broker is up, the running agent is the one failing: "
            "--even-if-offline installs anyway")

    def _switch_and_check(self, version: str, old: str | None, restart: Restart,
                          health: HealthCheck, broker: BrokerCheck | None = None,
                          keep_on_failure: bool = False) -> str:
        """Steps 3 to 5 (module docstring), the lock held; ``version`` is unpacked."""
        try:
            self._write_state({"pending": version, "previous": old, "ts": time.time(),
                               "keep": keep_on_failure})
            self._crash("before-switch")
            self._switch(version)
        except OSError as exc:  # a full disk: the switch is not recorded, or not made
            if self.current_version() == version:
                self.rollback()
            else:
                with contextlib.suppress(OSError):
                    self._write_state({})
                if not keep_on_failure:
                    self._remove(self.releases / version)
            raise UpdateError(f"cannot switch to release {version}: {exc.strerror or exc} "
                              "(nothing changed)") from None
        self._crash("after-switch")
        ok = False
        try:
            restart()
            try:
                ok = health(version)
            except Exception as exc:  # a crashing check is a failed check
                log.warning("health check of %s raised: %s", version, exc)
        except BaseException as exc:  # interrupted, a hung restart: never stay unconfirmed
            back = self.rollback()
            with contextlib.suppress(Exception):
                restart()
            log.error("update to %s interrupted: rolled back to %s", version, back)
            if isinstance(exc, Exception):  # (a missing systemctl: OSError)
                raise RolledBack(f"{exc}; rolled back to {back}") from None
            raise
        if ok:
            self._write_state({})
            (self.root / ROLLED_BACK_FILE).unlink(missing_ok=True)
            self.prune(keep={version, *([old] if old else [])})
            log.info("update %s -> %s committed", old, version)
            return version
        # recorded with the rollback (a kill while the release put back is checked keeps it),
        # taken back if the broker proves out of reach
        earlier = rolled_back(self.root)
        back = self.rollback()
        restarted_ts = time.time()
        restart()
        if broker is not None and old is not None and back != version \
                and not broker(restarted_ts):  # the release put back is silent too: the broker
            log.warning("release %s could not be checked: %s does not reach the broker either",
                        version, back)
            self._unnote_rollback(earlier)
            raise BrokerUnreachable(
                f"release {version} could not be checked: the broker went out of reach "
                f"during its check (release {back}, put back, cannot reach it either); "
                f"rolled back to {back}: run it again when the broker is back")
        raise RolledBack(f"release {version} failed its health check; "
                         + (f"rolled back to {back}" if back != version else
                            "no previous release to roll back to: it keeps running"))

    def rollback(self) -> str | None:
        """Point ``current`` back to the recorded previous release, record the failed one as rolled
        back (:func:`rolled_back`), then clear the state (a kill in between: :meth:`recover` does
        it again); the failed release is deleted unless ``current`` still points to it (no
        complete previous one) or it was a kept one gone back to."""
        state = self._state()
        previous = state.get("previous")
        if previous and (self.releases / previous / COMPLETE_MARK).exists():
            self._switch(previous)
        else:
            log.error("no complete previous release to roll back to: staying on %s",
                      self.current_version())
        bad = state.get("pending")
        failed = bad if isinstance(bad, str) and bad != self.current_version() else None
        if failed:
            self._note_rollback(failed)
        self._write_state({})
        if failed and not state.get("keep"):
            self._remove(self.releases / failed)
        return self.current_version()

    def _note_rollback(self, version: str) -> None:
        """Record ``version`` as rolled back (:data:`ROLLED_BACK_FILE`); a full card only loses
        the record."""
        try:
            self._write_json(ROLLED_BACK_FILE, {"version": version, "ts": time.time(),
                                                "running": self.current_version()})
        except OSError as exc:
            log.warning("cannot record the rollback of %s: %s", version, exc)

    def _unnote_rollback(self, earlier: dict[str, Any] | None) -> None:
        """Put back the record of rollbacks as it was before (``earlier``, None: no record): the
        release just rolled back could not be checked, it did not fail."""
        try:
            if earlier is None:
                (self.root / ROLLED_BACK_FILE).unlink(missing_ok=True)
            else:
                self._write_json(ROLLED_BACK_FILE, earlier)
        except OSError as exc:
            log.warning("cannot take back the record of a rollback: %s", exc)

    def recover(self) -> str | None:
        """At boot and before each start of the agent: drop staging and deletion leftovers and
        roll back an unconfirmed switch, unless a live install holds the root (left to finish)."""
        with self.locked(wait=False) as held:
            if not held:
                log.info("an install is in progress: its release is left to its health check")
                return self.current_version()
            return self._recover()

    def _recover(self) -> str | None:
        if self.releases.is_dir():
            for stale in [*self.releases.glob(".staging-*"), *self.releases.glob(".trash-*")]:
                shutil.rmtree(stale, ignore_errors=True)
        (self.root / f".{CURRENT}.new").unlink(missing_ok=True)
        if self._state().get("pending"):
            log.warning("an update to %s was not confirmed: rolling back",
                        self._state()["pending"])
            return self.rollback()
        return self.current_version()

    def prune(self, keep: set[str]) -> None:
        """Delete releases other than ``keep``."""
        for path in list(self.releases.iterdir()):
            if not path.name.startswith(".") and path.name not in keep:
                self._remove(path)


def _copy_payload(bundle: Path, manifest: Manifest, dest: Path) -> Path:
    """Copy the bundle's verified payload to ``dest`` (in a folder only root can write), hashing it
    again on the way, a megabyte at a time: what is unpacked is what was verified (the bundle may
    change after its check) and memory stays flat whatever the release's size.

    Raises:
        UpdateError: the payload read now is not the one verified.
    """
    digest = hashlib.sha256()
    left = manifest.payload_bytes + 1  # one byte more: a payload grown since shows as changed
    with open(bundle, "rb") as src, open(dest, "wb") as out:
        src.seek(manifest.payload_offset)
        while left and (chunk := src.read(min(CHUNK, left))):
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    if digest.hexdigest() != manifest.payload_sha256:
        raise UpdateError("payload changed after verification")
    return dest


def _extract(tar: tarfile.TarFile, dest: Path) -> None:
    """Unpack ``tar`` into ``dest``: plain files, folders and symbolic links only, no member
    outside ``dest`` or through a link, within :data:`MAX_RELEASE_BYTES` and the free space.

    A link's target is written as it is (a venv's ``python3`` points to the system's), never
    followed while unpacking. Works the same on every Python 3.11 (no extraction filters needed).
    """
    members = tar.getmembers()
    total = sum(m.size for m in members if m.isreg())
    if total > MAX_RELEASE_BYTES:
        raise UpdateError(f"release unpacks to {total} bytes (at most {MAX_RELEASE_BYTES})")
    if shutil.disk_usage(dest).free < total + FREE_MARGIN_BYTES:
        raise UpdateError(f"not enough room to unpack {total} bytes on {dest.parent}")
    links: set[PurePosixPath] = set()
    seen: set[PurePosixPath] = set()
    for m in members:
        rel = PurePosixPath(m.name)  # ("./bin" reads as "bin": pathlib drops the dots)
        if rel.is_absolute() or ".." in rel.parts or "\0" in m.name:
            raise UpdateError(f"unsafe path in the release: {m.name!r}")
        if any(parent in links for parent in rel.parents):
            raise UpdateError(f"{m.name!r} lies under a symbolic link of the release")
        if not rel.parts and m.isdir():
            continue  # the tree's own root
        if rel == PurePosixPath(COMPLETE_MARK):  # (a link there: the mark written through it)
            raise UpdateError(f"{m.name!r} is the installer's own mark of a complete release")
        if rel in seen:
            raise UpdateError(f"{m.name!r} appears twice in the release")
        seen.add(rel)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if m.isdir():
            target.mkdir(exist_ok=True)
            target.chmod(0o755)
        elif m.isreg():
            src = tar.extractfile(m)
            assert src is not None
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         0o755 if m.mode & 0o111 else 0o644)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
        elif m.issym():
            os.symlink(m.linkname, target)
            links.add(rel)
        else:
            raise UpdateError(f"{m.name!r}: only files, folders and symbolic links in a release")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for sub, _dirs, files in os.walk(path):
        for name in files:
            file = os.path.join(sub, name)
            if os.path.islink(file):
                continue  # the link itself is in its folder, synced below; never what it names
            with open(file, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(sub))


def main(argv: list[str] | None = None) -> int:
    """``python update.py recover --root DIR``: the boot-time recovery, standard library only."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description="Miroir update recovery")
    parser.add_argument("action", choices=["recover"], help="what to do")
    parser.add_argument("--root", type=Path, required=True, help="the releases root")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    version = Updater(args.root).recover()
    print(f"running release: {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

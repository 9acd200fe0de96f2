"""Encrypted backup and restore of a site directory (its CA, identities and inventory).

The dashboard's database is not in it (it lives elsewhere, and grows with the floor's history):
``miroir dashboard backup`` copies it, consistently, while the dashboard runs.

Format: ``MIROIRBK1`` magic, 16-byte salt, 12-byte nonce, then AES-256-GCM over a gzip'd tar of
the site directory (without the broker's persistence and logs). The key comes from the passphrase
through scrypt (n=2**15, r=8, p=1). A wrong passphrase or a single changed byte fails the GCM tag:
nothing is restored then.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import pwd
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from miroir.files import atomic_write
from provisioning.broker import BROKER_USER, CONFIG_FILE, LOG_FILE
from provisioning.inventory import INVENTORY_FILE, InventoryError
from provisioning.site import Site, SiteError, make_private, site_lock

MAGIC = b"MIROIRBK1"
SALT_BYTES = 16
"""Length of the random scrypt salt stored in the header."""
NONCE_BYTES = 12
"""Length of the random AES-GCM nonce stored in the header (GCM's standard 96 bits)."""
SCRYPT_N = 2**15
EXCLUDED = ("persist", LOG_FILE, f"{LOG_FILE}.stderr")
MIN_PASSPHRASE = 12
TAG_BYTES = 16
"""Length of the AES-GCM authentication tag at the end of the sealed archive."""
HEADER_BYTES = len(MAGIC) + SALT_BYTES + NONCE_BYTES
"""Length of the header before the sealed archive: magic, salt and nonce."""


class BackupError(RuntimeError):
    """A backup that cannot be made or restored (wrong passphrase, corrupt file, ...)."""


def _key(passphrase: str, salt: bytes) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=32, n=SCRYPT_N, r=8, p=1).derive(passphrase.encode())


def _filter(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    parts = Path(info.name).parts
    if len(parts) > 1 and (parts[1] in EXCLUDED or parts[1].startswith(".")):
        return None
    return info


def _broker_access(site: Path) -> None:
    """Recreate the broker's log (left out of the archive) and, as root, give the broker user its
    files back (the archive does not keep owners)."""
    log_file = site / LOG_FILE
    log_file.touch(mode=0o640, exist_ok=True)  # the broker refuses to start without it
    make_private(site)  # (a backup of an older version may hold them open)
    for folder in (site, site / "ca", site / "broker"):
        folder.chmod(0o755)  # the broker reads certificates there; tar made them by the umask
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam(BROKER_USER)
    except KeyError:
        return
    key = site / "broker" / "key.pem"
    if key.exists():
        os.chown(key, 0, user.pw_gid)
        key.chmod(0o640)
    os.chown(site / "persist", user.pw_uid, user.pw_gid)
    os.chown(log_file, user.pw_uid, user.pw_gid)


def _folder_modes(tar: tarfile.TarFile, stage: Path) -> None:
    """Give the extracted folders their archived modes (the "data" filter leaves folders to the
    umask: a box's key folder came back 0755), never writable by group or others."""
    for member in tar.getmembers():
        if member.isdir():
            (stage / member.name).chmod(member.mode & 0o755)


def _relocate_config(site: Path, dest: Path) -> None:
    """Point the broker's config at ``dest`` when the site is restored somewhere else (its paths
    are absolute: the CA, keys, ACL, CRL, persistence and log of the old location)."""
    conf = site / CONFIG_FILE
    text = conf.read_text()
    old = next((Path(line.split(None, 1)[1]).parent for line in text.splitlines()
                if line.startswith("acl_file ")), None)
    if old is not None and old != dest.absolute():
        conf.write_text(text.replace(f"{old}/", f"{dest.absolute()}/"))


def dashboard_db(site_dir: Path) -> str:
    """The dashboard's database as the site's ``dashboard.env`` names it ("" if it does not)."""
    try:
        lines = (Path(site_dir) / "dashboard.env").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        key, _, value = line.partition("=")
        if key.strip() == "MIROIR_DASH_DB_PATH":
            return value.strip().strip("'\"")
    return ""


def site_changed(site_dir: Path) -> dt.datetime:
    """When the site's boxes last changed (an enrolment, a revocation): its inventory's time."""
    return dt.datetime.fromtimestamp((Path(site_dir) / INVENTORY_FILE).stat().st_mtime, dt.UTC)


def _secret(passphrase: str | Callable[[], str]) -> str:
    """The passphrase, asked now if it is a function (once the rest has been checked)."""
    return passphrase() if callable(passphrase) else passphrase


def backup(site_dir: Path, out: Path, passphrase: str | Callable[[], str]) -> Path:
    """Write an encrypted backup of ``site_dir`` to ``out`` (mode 0600).

    Args:
        site_dir: The site directory.
        out: Backup file to write.
        passphrase: At least 12 characters, or a function that asks it (called once the site
            has been checked, so that nobody types it for a backup that cannot be made).

    Returns:
        ``out``.
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    site_dir = Path(site_dir)
    if not (site_dir / "site.json").exists():
        raise BackupError(f"{site_dir} is not a site directory")
    if Path(out).resolve().is_relative_to(site_dir.resolve()):  # the next backup would hold it
        raise BackupError(f"the backup file {out} is inside the site folder {site_dir}; write it "
                          "off this server (a USB key, /media/usb/...); nothing written")
    try:  # a damaged site written over the good backup would leave nothing to restore
        Site(site_dir).inventory()
    except (SiteError, InventoryError) as exc:
        raise BackupError(f"{exc}; no backup written") from None
    passphrase = _secret(passphrase)
    if len(passphrase) < MIN_PASSPHRASE:
        raise BackupError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
    buf = io.BytesIO()
    with site_lock(site_dir), tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(site_dir, arcname="site", filter=_filter)  # no enrolment or revocation half done
    salt, nonce = os.urandom(SALT_BYTES), os.urandom(NONCE_BYTES)
    sealed = AESGCM(_key(passphrase, salt)).encrypt(nonce, buf.getvalue(), MAGIC)
    out = Path(out)
    # 0600 even over an older file, which stays whole until this one is written
    try:
        atomic_write(out, MAGIC + salt + nonce + sealed, mode=0o600)
    except OSError as exc:  # a full or read-only USB key, a wrong path
        raise BackupError(f"cannot write the backup {out}: {exc.strerror or exc}; nothing "
                          "written (a backup already there is kept)") from None
    return out


def restore(backup_file: Path, dest: Path, passphrase: str | Callable[[], str]) -> Path:
    """Decrypt a backup into ``dest`` (must not exist yet); nothing is written on failure.
    ``passphrase`` may be a function that asks it, called once the file and ``dest`` are checked.

    Returns:
        ``dest``, a site directory again (the broker's persistence starts empty).
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} exists and is not empty")
    data = Path(backup_file).read_bytes()
    if not data.startswith(MAGIC):
        raise BackupError(f"{backup_file} is not a Miroir site backup")
    if len(data) < HEADER_BYTES + TAG_BYTES:
        raise BackupError(f"{backup_file} is damaged: cut short at {len(data)} bytes")
    head = len(MAGIC)
    salt = data[head:head + SALT_BYTES]
    nonce = data[head + SALT_BYTES:HEADER_BYTES]
    try:
        plain = AESGCM(_key(_secret(passphrase), salt)).decrypt(nonce, data[HEADER_BYTES:], MAGIC)
    except InvalidTag:
        raise BackupError("wrong passphrase, or the backup file is damaged") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".restore-", dir=dest.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(plain), mode="r:gz") as tar:
            tar.extractall(stage, filter="data")
            _folder_modes(tar, stage)
        site = stage / "site"
        (site / "persist").mkdir(mode=0o700, exist_ok=True)
        _broker_access(site)
        _relocate_config(site, dest)
        if dest.exists():
            dest.rmdir()
        site.rename(dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return dest


__all__ = ["BackupError", "backup", "dashboard_db", "restore", "site_changed"]

"""Site PKI: one certificate authority per site, server and client certificates, revocation.

Keys are EC P-256, signatures SHA-256. Every file is PEM. Private keys are written 0600 (the
broker's own key is later opened to the ``mosquitto`` group by :mod:`provisioning.broker`),
certificates 0644, in folders made 0700. A pair lives in a directory as ``cert.pem`` and ``key.pem``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from miroir.files import atomic_write

log = logging.getLogger(__name__)
T = TypeVar("T")

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
KEY_MODE = 0o600
CERT_MODE = 0o644
CLOCK_SKEW_S = 300
"""Certificates start this many seconds in the past so that a box with a slightly late clock
accepts them."""

_FORBIDDEN_CN_CHARS = frozenset("/+#\x00")


@dataclass(frozen=True)
class CertPair:
    """Paths of a PEM certificate and its PEM private key."""

    cert: Path
    key: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` atomically (a full disk leaves the old file whole: the CRL
    rewritten in place was left cut short, which the broker refuses to start with), with
    ``mode``, never exposing it with wider permissions (a folder it makes is root's only, 0700,
    whatever the umask: callers open up what the broker reads)."""
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o700, parents=True)
        path.parent.chmod(0o700)
    atomic_write(path, data, mode=mode)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(path, pem, KEY_MODE)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write(path, cert.public_bytes(serialization.Encoding.PEM), CERT_MODE)


class PemError(ValueError):
    """A site's PEM file that is missing or cannot be read as what it should hold (one line,
    naming the file and what to do)."""


RESTORE = ("restore the site from its backup into a new folder (`miroir provision restore BACKUP "
           "--site-dir NEW-FOLDER`)")


def _read_pem(path: Path, what: str, load: Callable[[bytes], T]) -> T:
    """Load ``path`` with ``load``, or raise :class:`PemError` naming it when it is missing or
    damaged (a full disk, a bad copy)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise PemError(f"{path} is missing ({what}); {RESTORE}") from None
    try:
        return load(data)
    except ValueError as exc:
        raise PemError(f"{path} is damaged, not a PEM {what} ({str(exc).split('. ')[0]}); "
                       f"{RESTORE}") from None


def load_cert(path: Path) -> x509.Certificate:
    """Load a PEM certificate (:class:`PemError` when it is missing or damaged)."""
    return _read_pem(path, "certificate", x509.load_pem_x509_certificate)


def load_crl(path: Path) -> x509.CertificateRevocationList:
    """Load a PEM revocation list (:class:`PemError` when it is missing or damaged)."""
    return _read_pem(path, "revocation list", x509.load_pem_x509_crl)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = _read_pem(path, "private key",
                    lambda data: serialization.load_pem_private_key(data, password=None))
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PemError(f"{path} is not an EC private key; {RESTORE}")
    return key


def create_ca(dir: Path, site: str, days: int = 3650) -> CertPair:
    """Create a self-signed site CA in ``dir`` (``cert.pem``, ``key.pem``).

    Args:
        dir: Directory to write into (created if missing).
        site: Site id, written in the CA's subject.
        days: Validity in days.

    Returns:
        The CA's certificate and key paths.
    """
    dir = Path(dir)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Miroir"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, site),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Miroir site CA {site}"),
        ]
    )
    start = _now() - dt.timedelta(seconds=CLOCK_SKEW_S)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pair = CertPair(dir / CERT_FILE, dir / KEY_FILE)
    _write_key(pair.key, key)
    _write_cert(pair.cert, cert)
    log.info("created CA for site %s in %s", site, dir)
    return pair


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def issue(
    ca: CertPair,
    dir: Path,
    common_name: str,
    *,
    server: bool = False,
    hosts: Sequence[str] = (),
    days: float = 825,
    not_before: dt.datetime | None = None,
) -> CertPair:
    """Issue a certificate signed by ``ca`` into ``dir`` (``cert.pem``, ``key.pem``).

    Client certificates carry the identity (box id or dashboard identity) as CN, which the
    broker uses as the MQTT username. Pass a ``not_before`` in the past and a small ``days``
    to make an already-expired certificate (tests).

    Args:
        ca: The issuing CA.
        dir: Directory to write into (created if missing).
        common_name: Subject CN.
        server: True for the broker (serverAuth, SAN from ``hosts``), False for a client.
        hosts: DNS names or IP addresses for the server's subjectAltName.
        days: Validity in days from ``not_before``.
        not_before: Start of validity (aware datetime); default now minus 5 minutes.

    Returns:
        The new certificate and key paths.
    """
    if not common_name or _FORBIDDEN_CN_CHARS & set(common_name):
        raise ValueError(f"common name {common_name!r} is empty or holds '/', '+', '#'")
    if server and not hosts:
        raise ValueError("a server certificate needs at least one host for its SAN")
    dir = Path(dir)
    ca_cert = load_cert(ca.cert)
    ca_key = _load_key(ca.key)
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or _now() - dt.timedelta(seconds=CLOCK_SKEW_S)
    eku = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(_san(hosts), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    pair = CertPair(dir / CERT_FILE, dir / KEY_FILE)
    _write_key(pair.key, key)
    _write_cert(pair.cert, cert)
    log.info("issued %s certificate %r in %s", "server" if server else "client", common_name, dir)
    return pair


def revoke(ca: CertPair, crl_path: Path, certs: Sequence[Path], *, days: float | None = None) -> Path:
    """Add ``certs`` to the CA's PEM CRL at ``crl_path`` (created or extended) and return it.

    Entries already in an existing CRL at ``crl_path`` are kept; the CRL number increases.

    Args:
        ca: The CA that issued the certificates.
        crl_path: Where the PEM CRL is written.
        certs: PEM certificates to revoke.
        days: Days until the CRL's next update; default: until the CA itself expires. Mosquitto
            refuses every client once it passes, and nothing here re-signs the CRL on a timer (a
            year, as before, locked a site with no revocation out of its own broker).

    Returns:
        ``crl_path``.
    """
    crl_path = Path(crl_path)
    ca_cert = load_cert(ca.cert)
    ca_key = _load_key(ca.key)
    now = _now()
    revoked: dict[int, dt.datetime] = {}
    number = 1
    if crl_path.exists():
        old = load_crl(crl_path)
        if not old.is_signature_valid(ca_key.public_key()):
            raise PemError(f"{crl_path} is not this site's: not signed by its CA; {RESTORE}")
        for entry in old:
            revoked[entry.serial_number] = entry.revocation_date_utc
        with contextlib.suppress(x509.ExtensionNotFound):
            number = old.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
    for path in certs:
        cert = load_cert(path)
        if cert.issuer != ca_cert.subject:
            raise PemError(f"{path} was not issued by this site's CA; {RESTORE}")
        revoked.setdefault(cert.serial_number, now)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(seconds=CLOCK_SKEW_S))
        .next_update(ca_cert.not_valid_after_utc if days is None else now + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    for serial, when in sorted(revoked.items()):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())
    _write(crl_path, crl.public_bytes(serialization.Encoding.PEM), CERT_MODE)
    log.info("CRL %s now revokes %d certificate(s)", crl_path, len(revoked))
    return crl_path


__all__ = ["CertPair", "PemError", "create_ca", "issue", "load_cert", "load_crl", "revoke"]

"""The site's certificates the dashboard can see: the site CA, its own MQTT identity, the
broker's (as served at the ingest's last connection) and the one it serves HTTPS with, if any,
with the days left on each.

Once the broker's certificate ends, every box is refused; once the dashboard's ends, the dashboard
hears nothing; the CA ends the site. ``miroir provision expiry`` lists the same on the server, with
every box's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from miroir.wire import DAY_S

from .settings import DashboardSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteCert:
    """One certificate of the site and the days left on it."""

    name: str
    """``ca``, ``dashboard``, ``broker`` or ``https`` (the page's own, when it serves TLS)."""
    not_after_ts: float
    days_left: float


def not_after_ts(pem_or_der: bytes) -> float:
    """End of validity (seconds since the epoch) of a PEM or DER certificate."""
    from cryptography import x509

    cert = (x509.load_pem_x509_certificate(pem_or_der) if pem_or_der.lstrip().startswith(b"-----")
            else x509.load_der_x509_certificate(pem_or_der))
    return cert.not_valid_after_utc.timestamp()


def peer_not_after_ts(sock: Any) -> float | None:
    """End of validity of the certificate a TLS socket's peer showed, None if it has none."""
    der = sock.getpeercert(binary_form=True) if hasattr(sock, "getpeercert") else None
    return not_after_ts(der) if der else None


def _file_not_after_ts(path: Path | None) -> float | None:
    if path is None:
        return None
    try:
        return not_after_ts(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        log.warning("cannot read the certificate %s: %s", path, exc)
        return None


def site_certs(settings: DashboardSettings, broker_not_after_ts: float | None,
               now: float | None = None) -> list[SiteCert]:
    """The CA's, the dashboard's, the broker's and the HTTPS certificates known now, soonest
    end first."""
    now = time.time() if now is None else now
    ends = {"ca": _file_not_after_ts(settings.mqtt_ca),
            "dashboard": _file_not_after_ts(settings.mqtt_cert), "broker": broker_not_after_ts,
            "https": _file_not_after_ts(settings.tls_cert_file)}
    certs = [SiteCert(name, end, (end - now) / DAY_S) for name, end in ends.items()
             if end is not None]
    return sorted(certs, key=lambda c: c.days_left)


__all__ = ["SiteCert", "not_after_ts", "peer_not_after_ts", "site_certs"]

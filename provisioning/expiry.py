"""When the site's certificates end: the CA, the broker's, the dashboard's, the revocation list's
next update and every active box's, soonest first, each with the command that renews it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from miroir.wire import DAY_S
from provisioning import pki
from provisioning.inventory import ACTIVE
from provisioning.site import Site

WARN_DAYS = 30
"""Default warning horizon: as the dashboard's IT page (``dashboard.fleet.CERT_WARN_DAYS``)."""
HTTPS_CERT = "https/cert.pem"
"""Where docs/dashboard-tls.md makes the dashboard's HTTPS certificate from the site CA."""


@dataclass(frozen=True)
class Expiry:
    """One certificate (or the revocation list) of the site and when it ends."""

    what: str
    """``ca``, ``broker``, ``dashboard``, ``crl``, ``https`` or ``box``."""
    name: str
    """The box id for a box, else the same as ``what``."""
    not_after: dt.datetime
    days_left: float
    action: str
    """The command that renews it (or what to do when none does)."""


def _action(site: Site, what: str, name: str) -> str:
    if what == "box":
        return f"{site.command('rotate', name)}, then {site.command('rotate', name, '--finish')}"
    if what == "https":
        return ("make it again as docs/dashboard-tls.md says, then restart the dashboard "
                "(renew does not)")
    if what == "ca":
        return "cannot be renewed in place: plan a new site (site-init) and enrol the boxes again"
    return site.command("renew")


def site_expiries(site: Site, now: dt.datetime | None = None) -> list[Expiry]:
    """Every certificate of ``site`` (revoked boxes left out) and the CRL, soonest end first."""
    now = now or dt.datetime.now(dt.UTC)
    ends: list[tuple[str, str, dt.datetime]] = [
        (what, what, pki.load_cert(path).not_valid_after_utc)
        for what, path in (("ca", site.ca.cert), ("broker", site.server.cert),
                           ("dashboard", site.dashboard.cert))]
    https = site.dir / HTTPS_CERT
    if https.exists():  # the dashboard's own HTTPS certificate from the site CA (dashboard-tls.md)
        ends.append(("https", "https", pki.load_cert(https).not_valid_after_utc))
    crl = pki.load_crl(site.crl)
    if crl.next_update_utc is not None:
        ends.append(("crl", "crl", crl.next_update_utc))
    for rec in site.inventory().boxes.values():
        cert = site.box_pair(rec.box).cert
        if rec.state == ACTIVE and Path(cert).exists():
            ends.append(("box", rec.box, pki.load_cert(cert).not_valid_after_utc))
    out = [Expiry(what, name, end, (end - now).total_seconds() / DAY_S,
                  _action(site, what, name))
           for what, name, end in ends]
    return sorted(out, key=lambda e: (e.days_left, e.name))


__all__ = ["WARN_DAYS", "Expiry", "site_expiries"]

"""``miroir provision ...``: site IT's commands (site CA, enrolment, revocation, backup)."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from miroir.cli import CliError, ask_secret, int_between, os_error_text, read_text_file

if TYPE_CHECKING:
    from provisioning.inventory import Enrolment
    from provisioning.site import Reload, Site

DEFAULT_SITE_DIR = Path(os.environ.get("MIROIR_SITE_DIR", "/var/lib/miroir-site"))


def _site(args: argparse.Namespace) -> Site:
    from provisioning.site import Site

    return Site(args.site_dir)  # (a SiteError becomes one line in _plain_errors)


def _reload(args: argparse.Namespace) -> Reload:
    from provisioning.site import signal_reload, systemctl_reload

    return signal_reload(args.broker_pid) if args.broker_pid else systemctl_reload(args.broker_unit)


def _passphrase(args: argparse.Namespace, confirm: bool) -> str:
    if args.passphrase_file:
        return read_text_file(args.passphrase_file, "--passphrase-file").rstrip("\r\n")
    first = ask_secret("backup passphrase: ", "passphrase", "--passphrase-file")
    if confirm and ask_secret("again: ", "passphrase", "--passphrase-file") != first:
        raise CliError("the two passphrases differ")
    return first


def cmd_site_init(args: argparse.Namespace) -> int:
    """Create a site: CA, broker certificate, Mosquitto config and ACL, dashboard identity and admin."""
    from provisioning.site import SiteError, init_site

    try:
        site = init_site(args.site_dir, args.site, broker_host=args.broker_host, port=args.port,
                         bind=args.bind, extra_hosts=args.extra_host or (),
                         admin_user=args.admin_user)
    except (SiteError, ValueError) as exc:
        raise CliError(str(exc)) from None
    print(f"site {site.site} created in {site.dir}")
    print(f"broker config: {site.config} (TLS port {site.port}, boxes reach it as "
          f"{site.broker_host})")
    print(f"dashboard settings: {site.dir / 'dashboard.env'}; first admin password in "
          f"{site.dir / 'admin-password'}")
    backup = site.command("backup", f"~/{site.site}.bak")
    print(f"next: back up the CA now (`{backup}`, then keep the file off this server), then "
          "enrol boxes")
    return 0


def _enroll(args: argparse.Namespace, items: list[Enrolment]) -> int:
    from provisioning.inventory import InventoryError

    site = _site(args)
    try:
        done = site.enroll(items)
    except InventoryError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", flush=True)
        raise CliError(f"{len(exc.problems)} problem(s); nothing was written") from None
    for path in done.bundles:
        print(f"bundle {path}")
    for note in done.already:
        print(note)
    print(f"{len(done.bundles)} box(es) enrolled, {len(done.already)} already enrolled; copy each "
          "new bundle to its box's boot partition as miroir-bundle.json")
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    """Enrol one box: key, certificate, settings and a first-boot bundle; record it in the inventory."""
    from provisioning.inventory import Enrolment

    # spaces at the ends dropped as a CSV's cells are (a newline, a script's slip, is refused)
    return _enroll(args, [Enrolment(box=args.box.strip(" "), seat=args.seat.strip(" "),
                                    agent=(args.agent or "").strip(" "),
                                    team=(args.team or "").strip(" "))])


def cmd_enroll_csv(args: argparse.Namespace) -> int:
    """Enrol every box of a CSV file (box,seat,agent,team); any bad row and nothing is written.
    Rows already enrolled at their seat are skipped, so the same file can be run again."""
    from provisioning.inventory import InventoryError, parse_csv

    try:
        items = parse_csv(args.file)
    except InventoryError as exc:
        problems = exc.problems + _site(args).check(exc.sound)  # and the clashes with the site
        for problem in problems:
            print(f"error: {problem}", flush=True)
        raise CliError(f"{len(problems)} problem(s) in {args.file}; nothing was written") from None
    return _enroll(args, items)


def cmd_revoke(args: argparse.Namespace) -> int:
    """Revoke a box: CRL and ACL updated, broker reloaded, its live connection cut, refused after."""
    site = _site(args)
    result = site.revoke(args.box, _reload(args), kick=not args.no_kick)
    live = "cut" if result.kicked else "left (--no-kick)" if args.no_kick else \
        f"not cut ({result.not_cut})"
    status = "cleared" if result.status_cleared else "left (not cut)"
    if result.revoked_before_ts is None:
        what = "revoked"
    else:
        when = dt.datetime.fromtimestamp(result.revoked_before_ts, dt.UTC)
        what = f"was already revoked on {when:%Y-%m-%d %H:%M} UTC, revoked again"
    print(f"box {result.box} {what} (serials {', '.join(result.serials)}); broker reloaded, the "
          f"revoked certificate refused {result.refused_after_s or 0:.2f} s after; live connection "
          f"{live}, retained status {status}, in {result.duration_s:.2f} s")
    print(f"next: back up the site again (`{site.command('backup', f'~/{site.site}.bak')}`): a "
          f"site restored from an older backup lets {result.box} in again")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    """Give a box a new certificate without downtime; --finish revokes the old one afterwards."""
    site = _site(args)
    if args.finish:
        done = site.finish_rotation(args.box, _reload(args))
        if done.serials:  # a cut that failed is said as revoke says it, with its exit code
            live = "" if done.kicked else f"; live connection not cut ({done.not_cut})"
            print(f"box {args.box}: retired {len(done.serials)} old certificate(s){live}")
        else:
            print(f"box {args.box}: no rotation waits for its finish; nothing changed")
    else:
        path = site.rotate(args.box, again=args.again)
        print(f"box {args.box}: new bundle {path}; the old certificate stays valid until "
              f"`{site.command('rotate', args.box, '--finish')}`")
    return 0


def cmd_renew(args: argparse.Namespace) -> int:
    """Renew the broker's and the dashboard's certificates (825 days) and the revocation list."""
    site = _site(args)
    until = site.renew(_reload(args))
    print(f"broker certificate renewed until {until['broker']} (broker reloaded, serving it); "
          f"revocation list valid until {until['crl']}")
    print(f"dashboard certificate renewed until {until['dashboard']}: restart the dashboard to use "
          "it (`systemctl restart miroir-dashboard`)")
    print(f"broker configuration rewritten ({site.config}): after an update of this server, restart "
          "the broker for all of it to apply (`systemctl restart mosquitto`)")
    return 0


def cmd_expiry(args: argparse.Namespace) -> int:
    """List the site's certificates (CA, broker, dashboard, boxes) and its revocation list that
    end within --days, soonest first, with the command that renews each; exit 1 if any."""
    from provisioning.expiry import site_expiries

    site = _site(args)
    ends = site_expiries(site)
    due = [e for e in ends if e.days_left < args.days]
    print(f"{len(due)} of {len(ends)} certificate(s) of site {site.site} end within "
          f"{args.days} days")
    for e in ends if args.all else due:
        state = "EXPIRED" if e.days_left <= 0 else "expires" if e.days_left < args.days else "ok"
        label = f"box {e.name}" if e.what == "box" else e.what
        print(f"{state:8} {e.days_left:7.1f} days  {label:36} {e.not_after:%Y-%m-%d %H:%M} UTC  "
              f"{e.action}")
    return 1 if due else 0


def cmd_backup(args: argparse.Namespace) -> int:
    """Write an encrypted backup (AES-256-GCM, scrypt passphrase) of the site folder: CA, keys,
    broker configuration, inventory (not the dashboard's database: `miroir dashboard backup`)."""
    from provisioning.backup import BackupError, backup, dashboard_db

    try:
        out = backup(args.site_dir, args.out, lambda: _passphrase(args, confirm=True))
    except BackupError as exc:
        raise CliError(str(exc)) from None
    print(f"backup written to {out}; keep it and its passphrase apart, off this server")
    print(f"not in it: the dashboard's database ({dashboard_db(args.site_dir) or 'see dashboard.env'}"
          "; users, audit log, history): back it up with `miroir dashboard backup DEST` "
          "(safe while the dashboard runs)")
    return 0


def _warn_unreachable(site_dir: Path) -> None:
    """Warn if the broker, once it drops to its user, cannot reach the restored site's files."""
    from provisioning.broker import BROKER_USER, BrokerError, check_reachable

    path = Path(site_dir).absolute()
    for folder in (*reversed(path.parents), path):
        try:
            check_reachable(folder)
        except BrokerError:
            print(f"warning: the broker's user ({BROKER_USER}) cannot traverse {folder}: Mosquitto "
                  f"cannot run the site from {path}; move it where it can ({DEFAULT_SITE_DIR}, "
                  "as site-init would)")
            return


def cmd_restore(args: argparse.Namespace) -> int:
    """Restore a site directory from an encrypted backup (nothing is written on a wrong passphrase)."""
    from provisioning.backup import BackupError, restore, site_changed
    from provisioning.site import Site

    try:
        dest = restore(args.file, args.site_dir, lambda: _passphrase(args, confirm=False))
    except BackupError as exc:
        raise CliError(str(exc)) from None
    print(f"site restored into {dest}, as it was on {site_changed(dest):%Y-%m-%d %H:%M} UTC: "
          f"revoke again (`{Site(dest).command('revoke', 'BOX')}`) every box revoked since, "
          "which it lets "
          "in; a box enrolled since connects but cannot be revoked here")
    _warn_unreachable(dest)
    print("not in it: the dashboard's database; on a new server, restore it with `miroir dashboard "
          "restore SOURCE` (IT guide, \"Backups\"): on an empty database the dashboard starts only "
          "with a first admin password in admin-password")
    return 0


def _site_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--site-dir", type=Path, default=DEFAULT_SITE_DIR,
                   help=f"the site directory (default $MIROIR_SITE_DIR or {DEFAULT_SITE_DIR})")


def _reload_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker-pid", type=int_between(1), default=None,
                   help="reload the broker by sending SIGHUP to this process id "
                        "(default: systemctl reload)")
    p.add_argument("--broker-unit", default="mosquitto.service",
                   help="systemd unit of the broker to reload (default mosquitto.service)")


def _plain_errors(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Site IT gets one line, not a traceback, for a damaged or missing file or a broker problem."""
    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from provisioning.broker import BrokerError
        from provisioning.inventory import InventoryError
        from provisioning.pki import PemError
        from provisioning.site import SiteError

        try:
            return handler(args)
        except BrokenPipeError:
            raise
        except (SiteError, InventoryError, BrokerError, PemError) as exc:
            raise CliError(str(exc)) from None
        except OSError as exc:
            raise CliError(os_error_text(exc)) from None
    return run


def register_cli(groups: dict[str, argparse._SubParsersAction]) -> None:
    """Add the ``provision`` command group to the root of the CLI."""
    from miroir.cli import span_text

    root = groups["root"]
    prov = root.add_parser("provision", help="site IT: site CA, box enrolment, revocation, backup",
                           description="Provision a site and its boxes (run on the site server).")
    sub = prov.add_subparsers(dest="provision_command", metavar="COMMAND", required=True)

    p = sub.add_parser("site-init", help="create the site CA, broker config, ACL and identities",
                       description=cmd_site_init.__doc__)
    _site_dir(p)
    p.add_argument("--site", required=True, help="site id ([a-z0-9-], 1 to 32 characters)")
    p.add_argument("--broker-host", required=True,
                   help="name or address the boxes use to reach the broker")
    p.add_argument("--port", type=int_between(1, 65535), default=8883,
                   help=f"broker TLS port, {span_text(1, 65535)} (default 8883)")
    p.add_argument("--bind", default="0.0.0.0",
                   help="address the broker listens on (default 0.0.0.0: every address)")
    p.add_argument("--extra-host", action="append",
                   help="another name or address of the broker (repeatable)")
    p.add_argument("--admin-user", default="admin",
                   help="name of the dashboard's first admin account, 1 to 64 letters, digits "
                        "or _ . @ - (default admin)")
    p.set_defaults(func=cmd_site_init)

    p = sub.add_parser("enroll", help="enrol one box and write its first-boot bundle",
                       description=cmd_enroll.__doc__)
    _site_dir(p)
    p.add_argument("box", help="box id ([a-z0-9-], 1 to 32 characters)")
    p.add_argument("--seat", required=True, help="the seat the box sits at")
    p.add_argument("--agent", default=None, help="the agent at that seat")
    p.add_argument("--team", default=None, help="the agent's team")
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser("enroll-csv", help="enrol every box of a CSV file, all or nothing",
                       description=cmd_enroll_csv.__doc__)
    _site_dir(p)
    p.add_argument("file", type=Path, help="CSV file with a header line box,seat,agent,team")
    p.set_defaults(func=cmd_enroll_csv)

    p = sub.add_parser("revoke", help="revoke a box and cut it off the broker at once",
                       description=cmd_revoke.__doc__)
    _site_dir(p)
    p.add_argument("box", help="box id")
    _reload_opts(p)
    p.add_argument("--no-kick", action="store_true",
                   help="do not close its live connection (it is denied every topic anyway)")
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser("rotate", help="new certificate for a box, without downtime",
                       description=cmd_rotate.__doc__)
    _site_dir(p)
    p.add_argument("box", help="box id")
    p.add_argument("--finish", action="store_true",
                   help="revoke the box's old certificate(s) once it runs with the new one")
    p.add_argument("--again", action="store_true",
                   help="make another new certificate while one waits for --finish (its bundle "
                        "then no longer works once finished)")
    _reload_opts(p)
    p.set_defaults(func=cmd_rotate)

    p = sub.add_parser("renew", help="renew the broker's and the dashboard's certificates",
                       description=cmd_renew.__doc__)
    _site_dir(p)
    _reload_opts(p)
    p.set_defaults(func=cmd_renew)

    p = sub.add_parser("expiry", help="certificates ending within N days (exit 1 if any)",
                       description=cmd_expiry.__doc__)
    _site_dir(p)
    p.add_argument("--days", type=int_between(1), default=30,
                   help=f"warn about what ends within this many days, {span_text(1)} (default 30)")
    p.add_argument("--all", action="store_true", help="list every certificate, not only those")
    p.set_defaults(func=cmd_expiry)

    p = sub.add_parser("backup", help="encrypted backup of the site folder (CA, keys, inventory)",
                       description=cmd_backup.__doc__)
    _site_dir(p)
    p.add_argument("out", type=Path, help="backup file to write")
    p.add_argument("--passphrase-file", type=Path, default=None,
                   help="read the passphrase from this file (default: ask)")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("restore", help="restore a site directory from an encrypted backup",
                       description=cmd_restore.__doc__)
    p.add_argument("file", type=Path, help="the backup file")
    p.add_argument("--site-dir", type=Path, required=True,
                   help="new (empty) site directory to restore into")
    p.add_argument("--passphrase-file", type=Path, default=None,
                   help="read the passphrase from this file (default: ask)")
    p.set_defaults(func=cmd_restore)
    for parser in sub.choices.values():
        parser.set_defaults(func=_plain_errors(parser.get_default("func")))

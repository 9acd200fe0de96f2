"""``miroir dashboard`` commands: users, inventory import, retiring a box, retention purge, backup
and restore.

Only the standard library is imported at module level (``miroir --help`` stays fast).
"""

from __future__ import annotations

import argparse
import csv
import getpass
import sqlite3
import sys
from pathlib import Path
from typing import Any

from miroir.cli import CliError, ask_secret, read_text_file

UNKNOWN_BOX_EXIT = 3
"""``retire``'s exit code when the dashboard never knew the box (nothing changed): not 2, the code
of a usage error, so that a script retiring a list tells a typo from a wrong command."""


def load_settings() -> Any:
    """The dashboard's settings, or a usage error (exit 2) with one line per bad variable."""
    from dashboard.settings import SettingsError, load

    try:
        return load()
    except SettingsError as exc:
        raise CliError("\nmiroir: error: ".join(exc.lines)) from None


def db_error(path: str | Path, exc: sqlite3.Error) -> CliError:
    """The dashboard's database that SQLite cannot open, as one line naming the setting."""
    path = Path(path)
    if not path.parent.is_dir():  # SQLite says "unable to open database file" for these two
        why = f"no folder {path.parent}"
    elif path.is_dir():
        why = "a folder, not a file"
    else:
        why = str(exc)
    return CliError(f"MIROIR_DASH_DB_PATH: cannot open {path} as the dashboard's database ({why})")


def _db(settings: Any) -> Any:
    from dashboard import analytics, schema
    from dashboard import db as store

    try:
        db = store.open_db(settings.db_path)
        schema.ensure_schema(db)
    except sqlite3.Error as exc:
        raise db_error(settings.db_path, exc) from None
    analytics.store_day_start(db, settings.day_start_utc_h)  # `purge` rolls days up
    return db


def cmd_user_add(args: argparse.Namespace) -> int:
    """Add a dashboard user (password read from a file or asked on the terminal)."""
    from dashboard import auth

    settings = load_settings()  # before the password is typed: nothing to add it to else
    if args.password_file:
        password = read_text_file(args.password_file, "--password-file").rstrip("\r\n")
    else:
        password = ask_secret(f"password for {args.username}: ", "password", "--password-file")
    if len(password) < 12:
        raise CliError("the password must be at least 12 characters")
    db = _db(settings)
    try:
        auth.create_user(db, args.username, password, args.role, agent=args.agent,
                         teams=args.team or [], lang=args.lang)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    except Exception as exc:  # sqlite IntegrityError: the name exists
        raise CliError(f"could not add {args.username!r}: {exc}") from None
    finally:
        db.conn.close()
    print(f"added {args.role} {args.username}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Import the site inventory (CSV with columns box, seat, agent, team)."""
    from dashboard import schema

    reader = csv.DictReader(read_text_file(args.csv).splitlines())  # as enroll-csv reads it
    rows = [{**row, "line": reader.line_num} for row in reader]
    if "box" not in (reader.fieldnames or ()):
        raise CliError(f"{args.csv}: no box column (its first line names the columns: box, "
                       "seat, agent, team)")
    settings = load_settings()
    db = _db(settings)
    try:
        n = schema.import_inventory(db, rows, site=settings.site, actor=_actor())
    except (KeyError, ValueError) as exc:
        raise CliError(f"{args.csv}: {exc}") from None
    finally:
        db.conn.close()
    print(f"imported {n} seats")
    return 0


def _actor() -> str:
    """Who runs the command: the user behind sudo, else the login user."""
    import os

    return os.environ.get("SUDO_USER") or getpass.getuser()


def cmd_retire(args: argparse.Namespace) -> int:
    """Take a box off the dashboard for good (after `miroir provision revoke`): off the floor, the IT
    page, /metrics and the alerts, its seat freed, anything it still publishes refused; its history
    is kept for the retention period. Audited. Exits 0 when retired (or retired already), 3 when
    the dashboard never knew the box (nothing changed), 2 on a usage error."""
    from datetime import datetime

    from dashboard import schema
    from miroir.wire import WireError

    settings = load_settings()
    db = _db(settings)
    try:
        out = schema.retire_box(db, args.box, actor=_actor())
    except WireError as exc:  # not a box id at all: a usage error
        raise CliError(str(exc)) from None
    except ValueError as exc:  # a box id this dashboard never knew
        raise CliError(f"{exc}; nothing changed", UNKNOWN_BOX_EXIT) from None
    finally:
        db.conn.close()
    if not out["retired"]:
        when = datetime.fromtimestamp(out["retired_ts"]).astimezone().isoformat(
            sep=" ", timespec="minutes")  # the server's zone, with its offset
        print(f"box {out['box']} was already retired ({when})")
        return 0
    seat = f"seat {out['seat']} freed" if out["seat"] else "it had no seat"
    print(f"box {out['box']} retired: off the floor, the IT page, /metrics and the alerts "
          f"({out['alerts_closed']} open alert(s) closed); {seat}; what it still publishes is "
          "refused; its history stays until the retention purge")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    """Run the retention purge now (it also runs automatically while serving)."""
    import json

    from dashboard import retention

    settings = load_settings()
    db = _db(settings)
    try:
        out = retention.purge_with(db, settings)
    finally:
        db.conn.close()
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """Write a consistent copy of the database (safe while the dashboard runs)."""
    from dashboard import retention

    try:
        path = retention.backup(load_settings().db_path, Path(args.dest))
    except (FileExistsError, ValueError) as exc:
        raise CliError(str(exc)) from None
    except (OSError, sqlite3.Error) as exc:
        raise CliError(f"cannot write the backup {args.dest}: {exc}") from None
    print(f"backup written to {path}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Replace the database with a backup (stop the dashboard first)."""
    from dashboard import retention

    if not Path(args.source).is_file():
        raise CliError(f"{args.source}: no such backup")
    db_path = load_settings().db_path
    try:
        retention.restore(Path(args.source), db_path)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    except (OSError, sqlite3.Error) as exc:
        raise CliError(f"cannot restore into {db_path}: {exc}") from None
    print(f"restored {args.source}")
    return 0


def register_cli(groups: dict[str, Any]) -> None:
    """Add the dashboard's commands to ``miroir dashboard``."""
    dash = groups["dashboard"]
    p = dash.add_parser("user", help="manage dashboard users", description="Manage users.")
    sub = p.add_subparsers(dest="user_command", metavar="COMMAND", required=True)
    p = sub.add_parser("add", help="add a user with a role (admin, supervisor, agent, auditor, "
                       "it)", description=cmd_user_add.__doc__)
    p.add_argument("username", help="login name")
    p.add_argument("--role", required=True,
                   choices=("admin", "supervisor", "agent", "auditor", "it"),
                   help="the user's role (it: site IT, fleet health only)")
    p.add_argument("--team", action="append",
                   help="a team the supervisor supervises (repeat for several)")
    p.add_argument("--agent", default=None, help="for an agent user, the agent id it is")
    p.add_argument("--lang", default="fr", choices=("fr", "en"),
                   help="interface language (default fr)")
    p.add_argument("--password-file", default=None,
                   help="file holding the password (default: ask on the terminal)")
    p.set_defaults(func=cmd_user_add)
    p = dash.add_parser("import", help="import the site inventory (boxes, seats, agents, teams)",
                        description=cmd_import.__doc__)
    p.add_argument("csv", help="CSV file with columns box, seat, agent, team")
    p.set_defaults(func=cmd_import)
    p = dash.add_parser("retire", help="take a revoked box off the dashboard (keeps its history)",
                        description=cmd_retire.__doc__)
    p.add_argument("box", help="box id (revoked with `miroir provision revoke`)")
    p.set_defaults(func=cmd_retire)
    p = dash.add_parser("purge", help="run the retention purge now", description=cmd_purge.__doc__)
    p.set_defaults(func=cmd_purge)
    p = dash.add_parser("backup", help="back up the database", description=cmd_backup.__doc__)
    p.add_argument("dest", help="file to write (must not exist)")
    p.set_defaults(func=cmd_backup)
    p = dash.add_parser("restore", help="restore the database from a backup",
                        description=cmd_restore.__doc__)
    p.add_argument("source", help="a file written by `miroir dashboard backup`")
    p.set_defaults(func=cmd_restore)

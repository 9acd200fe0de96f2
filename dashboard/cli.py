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
"""``retire``'s exit code when the dashboard never knew the box, and the ``user`` commands' when
there is no such user (nothing changed): not 2, the code of a usage error, so that a script
working through a list tells a typo from a wrong command."""


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


def _read_password(args: argparse.Namespace) -> str:
    """The new password of ``args.username``, from ``--password-file`` or asked on the terminal
    (with none, the first line piped in); a usage error when shorter than 12 characters."""
    if args.password_file:
        password = read_text_file(args.password_file, "--password-file").rstrip("\r\n")
    else:
        password = ask_secret(f"password for {args.username}: ", "password", "--password-file")
    if len(password) < 12:
        raise CliError("the password must be at least 12 characters")
    return password


def cmd_user_add(args: argparse.Namespace) -> int:
    """Add a dashboard user (password read from a file or asked on the terminal)."""
    from dashboard import auth

    settings = load_settings()  # before the password is typed: nothing to add it to else
    password = _read_password(args)
    db = _db(settings)
    try:
        auth.create_user(db, args.username, password, args.role, agent=args.agent,
                         teams=args.team or [], lang=args.lang, actor=_actor())
    except ValueError as exc:
        raise CliError(str(exc)) from None
    except Exception as exc:  # sqlite IntegrityError: the name exists
        raise CliError(f"could not add {args.username!r}: {exc}") from None
    finally:
        db.conn.close()
    print(f"added {args.role} {args.username}")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    """List the dashboard's users: name, role, the agent or teams they see, whether disabled and
    whether their second factor (TOTP) is enrolled."""
    from dashboard import auth

    db = _db(load_settings())
    try:
        users = auth.list_users(db)
        shared = auth.shared_agent_accounts(db)
    finally:
        db.conn.close()
    rows = [("USER", "ROLE", "SEES", "STATE", "TOTP")]
    for u in users:
        sees = u["agent"] or ",".join(u["teams"]) or ("-" if u["role"] == "supervisor" else "all")
        rows.append((u["username"], u["role"], sees, "disabled" if u["disabled"] else "active",
                     "enrolled" if u["totp_enrolled"] else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    for line in shared:
        print(f"warning: {line}", file=sys.stderr)
    return 0


def _unknown_user(name: str) -> CliError:
    return CliError(f"no dashboard user {name!r} (`miroir dashboard user list` names them); "
                    "nothing changed", UNKNOWN_BOX_EXIT)


def cmd_user_disable(args: argparse.Namespace) -> int:
    """Disable a user (someone who left, a stolen laptop): their open pages are logged out at once
    and their password no longer logs in; their history and the audit log stay. Audited. Exits 0,
    3 when there is no such user (nothing changed)."""
    return _switch_user(args.username, disabled=True)


def cmd_user_enable(args: argparse.Namespace) -> int:
    """Enable a disabled user again (with the password they had: `user reset` gives a new one).
    Audited. Exits 0, 3 when there is no such user, 2 for an agent's account when another of
    that agent's is active (one account per agent, as `user add` says); nothing changed."""
    return _switch_user(args.username, disabled=False)


def _switch_user(username: str, disabled: bool) -> int:
    """Disable or enable ``username`` (:func:`dashboard.auth.set_disabled`) and say what it did."""
    from dashboard import auth

    db = _db(load_settings())
    try:
        out = auth.set_disabled(db, username, disabled, actor=_actor())
    except KeyError:
        raise _unknown_user(username) from None
    except ValueError as exc:  # a second active account for one agent, as `user add` refuses
        raise CliError(str(exc)) from None
    finally:
        db.conn.close()
    if not disabled:
        print(f"{out['role']} {username} {'enabled' if out['changed'] else 'was not disabled'}")
    else:
        state = "disabled" if out["changed"] else "was already disabled"
        print(f"{out['role']} {username} {state}; {out['sessions_ended']} open session(s) ended")
    return 0


def cmd_user_reset(args: argparse.Namespace) -> int:
    """Give a user a new password (read from a file or asked on the terminal) and take away their
    authenticator (a forgotten password, a lost phone): every open session of theirs ends, and
    the next login enrols the second factor again. A disabled user stays disabled. Audited.
    Exits 0, 3 when there is no such user (nothing changed)."""
    from dashboard import auth

    db = _db(load_settings())
    try:
        if db.conn.execute("SELECT 1 FROM users WHERE username = ?",
                           (args.username,)).fetchone() is None:
            raise _unknown_user(args.username)  # before a password is typed for nobody
        password = _read_password(args)
        out = auth.reset_credentials(db, args.username, password, actor=_actor())
    except KeyError:
        raise _unknown_user(args.username) from None
    finally:
        db.conn.close()
    still = "; still disabled (`miroir dashboard user enable`)" if out["disabled"] else ""
    print(f"{out['role']} {args.username}: new password, authenticator to enrol at the next "
          f"login; {out['sessions_ended']} open session(s) ended{still}")
    return 0


def read_floor_csv(path: Path) -> list[dict[str, Any]]:
    """The rows of a floor CSV file read as `miroir provision enroll-csv` reads it (a byte order
    mark, capitals and spaces around the header's names allowed), each with its ``line``; a
    missing, non-UTF-8 or header-less file is a one-line :class:`CliError`."""
    import io

    try:
        text = path.read_text(encoding="utf-8-sig")  # Excel's "CSV UTF-8" begins with a BOM
    except FileNotFoundError:
        raise CliError(f"{path}: no such file; nothing imported") from None
    except IsADirectoryError:
        raise CliError(f"{path}: is a directory, not a file; nothing imported") from None
    except UnicodeDecodeError as exc:
        raise CliError(f"{path}: not UTF-8 text ({exc.reason}): save it as CSV UTF-8; nothing "
                       "imported") from None
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}; nothing imported") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    names = [(name or "").strip().lower() for name in reader.fieldnames or ()]
    if len(names) == 1 and ";" in names[0]:  # the words of provisioning.inventory.SEMICOLONS
        raise CliError(f"{path}: the columns are separated by ';', not ',': save the file from "
                       "Excel as \"CSV UTF-8 (délimité par des virgules)\"; nothing imported")
    if "box" not in names:
        raise CliError(f"{path}: its first line names no box column (got {', '.join(names)}): a "
                       "header line box,seat,agent,team, comma-separated, is needed; nothing "
                       "imported")
    reader.fieldnames = names
    return [{**row, "line": reader.line_num} for row in reader]


def cmd_import(args: argparse.Namespace) -> int:
    """Import the site inventory (CSV with columns box, seat, agent, team)."""
    from dashboard import schema

    rows = read_floor_csv(Path(args.csv))
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
    p = sub.add_parser("list", help="list the users, their roles and whether disabled",
                       description=cmd_user_list.__doc__)
    p.set_defaults(func=cmd_user_list)
    p = sub.add_parser("disable", help="disable a user: logged out at once, login refused",
                       description=cmd_user_disable.__doc__)
    p.add_argument("username", help="login name")
    p.set_defaults(func=cmd_user_disable)
    p = sub.add_parser("enable", help="enable a disabled user again",
                       description=cmd_user_enable.__doc__)
    p.add_argument("username", help="login name")
    p.set_defaults(func=cmd_user_enable)
    p = sub.add_parser("reset", help="a new password, the authenticator enrolled again",
                       description=cmd_user_reset.__doc__)
    p.add_argument("username", help="login name")
    p.add_argument("--password-file", default=None,
                   help="file holding the new password (default: ask on the terminal)")
    p.set_defaults(func=cmd_user_reset)
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

"""Versioned schema of the dashboard's own tables: ordered migrations that keep data.

The ingest tables (boxes, metrics, events, quarantine) and the base users and sessions tables
come from :mod:`dashboard.db`. Everything else (inventory, roles, audit log, coaching,
campaigns, retention settings) is created here by numbered migrations. Each migration runs
once, in one transaction, and records its number in ``schema_version``; an upgraded dashboard
applies only the migrations the database has not seen, so no data is lost across upgrades.
"""

from __future__ import annotations

import json
import logging
import time
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any

import sqlite_utils

from . import db as store

log = logging.getLogger(__name__)

Migration = Callable[[sqlite_utils.Database], None]


def _add_column(db: sqlite_utils.Database, table: str, column: str, decl: str) -> None:
    cols = {r[1] for r in db.conn.execute(f"PRAGMA table_info({table})").fetchall()}
    if column not in cols:
        db.conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")


def _m1_inventory_roles_audit(db: sqlite_utils.Database) -> None:
    """Inventory, roles, TOTP, throttling, audit log, coaching, campaigns, settings."""
    c = db.conn
    for col, decl in (("lang", "TEXT NOT NULL DEFAULT 'fr'"), ("agent", "TEXT"),
                      ("totp_secret", "TEXT"), ("totp_last_step", "INTEGER NOT NULL DEFAULT 0"),
                      ("disabled", "INTEGER NOT NULL DEFAULT 0")):
        _add_column(db, "users", col, decl)
    for col, decl in (("stage", "TEXT NOT NULL DEFAULT 'ok'"), ("pending_secret", "TEXT")):
        _add_column(db, "sessions", col, decl)
    c.executescript("""
    CREATE TABLE IF NOT EXISTS sites (
        site TEXT PRIMARY KEY, name TEXT, layout_cols INTEGER NOT NULL DEFAULT 6);
    CREATE TABLE IF NOT EXISTS teams (
        team TEXT PRIMARY KEY, name TEXT, site TEXT);
    CREATE TABLE IF NOT EXISTS agents (
        agent TEXT PRIMARY KEY, name TEXT, team TEXT, campaign TEXT, variant INTEGER,
        private INTEGER NOT NULL DEFAULT 0, active INTEGER NOT NULL DEFAULT 1,
        created_ts REAL, left_ts REAL);
    CREATE INDEX IF NOT EXISTS agents_team ON agents(team);
    CREATE TABLE IF NOT EXISTS seats (
        box TEXT PRIMARY KEY, site TEXT, label TEXT, row INTEGER, col INTEGER, agent TEXT);
    CREATE TABLE IF NOT EXISTS seat_history (
        id INTEGER PRIMARY KEY, box TEXT NOT NULL, agent TEXT NOT NULL,
        from_ts REAL NOT NULL, to_ts REAL);
    CREATE INDEX IF NOT EXISTS seat_history_agent ON seat_history(agent);
    CREATE TABLE IF NOT EXISTS user_teams (
        username TEXT NOT NULL, team TEXT NOT NULL, PRIMARY KEY (username, team));
    CREATE TABLE IF NOT EXISTS login_attempts (
        id INTEGER PRIMARY KEY, ts REAL NOT NULL, username TEXT, addr TEXT, ok INTEGER NOT NULL);
    CREATE INDEX IF NOT EXISTS login_attempts_ts ON login_attempts(ts);
    CREATE TABLE IF NOT EXISTS audit_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, actor TEXT NOT NULL,
        actor_role TEXT NOT NULL, agent TEXT, action TEXT NOT NULL, detail TEXT);
    CREATE INDEX IF NOT EXISTS audit_log_agent ON audit_log(agent, ts);
    CREATE TABLE IF NOT EXISTS app_settings (key TEXT PRIMARY KEY, value TEXT);
    CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
    CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
    WHEN old.ts >= coalesce((SELECT CAST(value AS REAL) FROM app_settings
                             WHERE key = 'audit_purge_before_ts'), 0)
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
    CREATE TABLE IF NOT EXISTS flags (
        id INTEGER PRIMARY KEY, agent TEXT NOT NULL, box TEXT, ts REAL NOT NULL,
        note TEXT NOT NULL DEFAULT '', author TEXT NOT NULL, created_ts REAL NOT NULL,
        shared INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX IF NOT EXISTS flags_agent ON flags(agent);
    CREATE TABLE IF NOT EXISTS goals (
        id INTEGER PRIMARY KEY, agent TEXT NOT NULL, metric TEXT NOT NULL, label TEXT NOT NULL,
        direction TEXT NOT NULL DEFAULT 'down', author TEXT NOT NULL, created_ts REAL NOT NULL,
        active INTEGER NOT NULL DEFAULT 1);
    CREATE INDEX IF NOT EXISTS goals_agent ON goals(agent);
    CREATE TABLE IF NOT EXISTS campaigns (
        campaign TEXT PRIMARY KEY, name TEXT NOT NULL, team TEXT, created_ts REAL);
    CREATE TABLE IF NOT EXISTS variants (
        id INTEGER PRIMARY KEY, campaign TEXT NOT NULL, name TEXT NOT NULL, text TEXT);
    CREATE TABLE IF NOT EXISTS calls (
        id INTEGER PRIMARY KEY, agent TEXT NOT NULL, box TEXT, start_ts REAL NOT NULL,
        end_ts REAL, campaign TEXT, variant INTEGER, outcome TEXT, outcome_by TEXT,
        outcome_ts REAL, summary TEXT);
    CREATE INDEX IF NOT EXISTS calls_agent ON calls(agent, start_ts);
    CREATE TABLE IF NOT EXISTS daily_aggregates (
        day TEXT NOT NULL, agent TEXT NOT NULL, metric TEXT NOT NULL, mean REAL, n INTEGER,
        PRIMARY KEY (day, agent, metric));
    """)
    c.execute("CREATE INDEX IF NOT EXISTS events_ts ON events(ts)")


def _m2_campaign_life_and_alerts(db: sqlite_utils.Database) -> None:
    """Campaign authorship and closing; fleet alert history (offline boxes) for IT."""
    for col in ("created_by", "closed_by"):
        _add_column(db, "campaigns", col, "TEXT")
    _add_column(db, "campaigns", "closed_ts", "REAL")
    db.conn.executescript("""
    CREATE TABLE IF NOT EXISTS alerts (
        id INTEGER PRIMARY KEY AUTOINCREMENT, box TEXT NOT NULL, kind TEXT NOT NULL,
        reason TEXT, since_ts REAL, raised_ts REAL NOT NULL, cleared_ts REAL);
    CREATE INDEX IF NOT EXISTS alerts_open ON alerts(cleared_ts, box);
    CREATE TRIGGER IF NOT EXISTS alerts_only_cleared BEFORE UPDATE ON alerts
    WHEN old.cleared_ts IS NOT NULL OR new.box IS NOT old.box OR new.kind IS NOT old.kind
      OR new.reason IS NOT old.reason OR new.since_ts IS NOT old.since_ts
      OR new.raised_ts IS NOT old.raised_ts OR new.id IS NOT old.id
    BEGIN SELECT RAISE(ABORT, 'alerts are append-only: only an open alert may be cleared'); END;
    """)


def _m3_known_devices(db: sqlite_utils.Database) -> None:
    """Browsers that completed a login: the account-wide login throttle spares them."""
    db.conn.executescript("""
    CREATE TABLE IF NOT EXISTS known_devices (
        token_hash TEXT PRIMARY KEY, username TEXT NOT NULL, created_ts REAL NOT NULL);
    CREATE INDEX IF NOT EXISTS login_attempts_user ON login_attempts(username, ts);
    """)


def _m4_code_attempts_and_device_renewal(db: sqlite_utils.Database) -> None:
    """Failed one-time codes told from failed passwords; a known browser dated by its last login."""
    _add_column(db, "login_attempts", "kind", "TEXT NOT NULL DEFAULT 'password'")
    cols = {r[1] for r in db.conn.execute("PRAGMA table_info(known_devices)").fetchall()}
    if "last_login_ts" not in cols:
        db.conn.execute("ALTER TABLE known_devices RENAME COLUMN created_ts TO last_login_ts")


def _m5_retired_boxes(db: sqlite_utils.Database) -> None:
    """Boxes taken off the site (``miroir dashboard retire``): their history stays, they do not."""
    db.conn.executescript("""
    CREATE TABLE IF NOT EXISTS retired_boxes (
        box TEXT PRIMARY KEY, retired_ts REAL NOT NULL, retired_by TEXT NOT NULL);
    """)


def _m6_stream_rows_by_box_and_time(db: sqlite_utils.Database) -> None:
    """Metrics and events by box and time: an agent's rows are read by seat window."""
    # The primary key (box, seq) finds a box's rows but not a time range in them: every read of
    # an agent's rows (pages, goals, exports, the purge's roll-up) went through all of the box's.
    db.conn.execute("CREATE INDEX IF NOT EXISTS metrics_box_ts ON metrics(box, ts)")
    db.conn.execute("CREATE INDEX IF NOT EXISTS events_box_ts ON events(box, ts)")


def _m7_calls_by_campaign_variant(db: sqlite_utils.Database) -> None:
    """Calls by campaign, variant and outcome: the variant comparison counts outcomes by them."""
    db.conn.execute("CREATE INDEX IF NOT EXISTS calls_campaign ON calls(campaign, variant, outcome)")


def _m8_daily_means_kept_up_to_date(db: sqlite_utils.Database) -> None:
    """Daily means rolled up every hour, not at the purge: each box's mark, rows by arrival."""
    # The audit page's team means and the goals read every per-second row of the retention
    # period on every view (34 to 126 s on a month of 7 boxes); they now read the stored daily
    # means and only the rows ingested since the box's mark (analytics.roll_up).
    db.conn.execute("CREATE TABLE IF NOT EXISTS rolled_up (box TEXT PRIMARY KEY, "
                    "before_ts REAL NOT NULL)")
    db.conn.execute("CREATE INDEX IF NOT EXISTS metrics_box_ingested ON metrics(box, ingested_ts)")
    db.conn.execute("CREATE INDEX IF NOT EXISTS daily_aggregates_agent "
                    "ON daily_aggregates(agent, metric, day)")


def _m9_erasures_under_way(db: sqlite_utils.Database) -> None:
    """Seat windows of an erasure whose per-second rows are still being deleted, in batches."""
    db.conn.execute("CREATE TABLE IF NOT EXISTS erasures (id INTEGER PRIMARY KEY, "
                    "box TEXT NOT NULL, from_ts REAL NOT NULL, to_ts REAL NOT NULL)")


def _m10_seat_changes(db: sqlite_utils.Database) -> None:
    """When each seat last changed hands: its box forgets the baselines learned before then."""
    _add_column(db, "seats", "changed_ts", "REAL")


def _m11_purged_rows_by_time(db: sqlite_utils.Database) -> None:
    """The audit log, quarantine and calls by time: each batch of the purge finds its rows."""
    # Without them a batch read the audit log by agent (or the whole quarantine) to find the
    # next 2,000 old rows, under the write lock: a write waited 0.11 s a batch on 1,000,000
    # entries of 100 agents, and a little more with every million.
    db.conn.execute("CREATE INDEX IF NOT EXISTS audit_log_ts ON audit_log(ts)")
    db.conn.execute("CREATE INDEX IF NOT EXISTS quarantine_received ON quarantine(received_ts)")
    db.conn.execute("CREATE INDEX IF NOT EXISTS calls_start ON calls(start_ts)")


def _m12_variants_by_campaign(db: sqlite_utils.Database) -> None:
    """Variants by campaign: the campaigns page reads each campaign's without reading them all."""
    # Without it every campaign's variants were found by reading the whole table: the campaigns
    # page took time in the square of the campaigns (2,000: 0.22 s; 10,000: 5.5 s).
    db.conn.execute("CREATE INDEX IF NOT EXISTS variants_campaign ON variants(campaign, id)")


def _m13_agents_off_other_teams_campaigns(db: sqlite_utils.Database) -> None:
    """Agents off a campaign of another team than theirs (an older release's assignment)."""
    # Such an agent's campaign id showed to their own team's supervisor, to whom the campaign
    # answers 404 (their record, the floor's filter); new calls are no longer tagged with it
    # (api.OTHER_TEAM). Taken off, as the import takes off an agent moved to another team.
    left = db.conn.execute(
        "SELECT a.agent, a.campaign FROM agents a JOIN campaigns c ON c.campaign = a.campaign "
        "WHERE c.team IS NOT NULL AND c.team IS NOT a.team ORDER BY a.agent").fetchall()
    for agent, campaign in left:
        db.conn.execute("UPDATE agents SET campaign = NULL, variant = NULL WHERE agent = ?",
                        (agent,))
        log.info("agent %s is not in campaign %s's team: taken off it", agent, campaign)


MIGRATIONS: list[Migration] = [_m1_inventory_roles_audit, _m2_campaign_life_and_alerts,
                               _m3_known_devices, _m4_code_attempts_and_device_renewal,
                               _m5_retired_boxes, _m6_stream_rows_by_box_and_time,
                               _m7_calls_by_campaign_variant, _m8_daily_means_kept_up_to_date,
                               _m9_erasures_under_way, _m10_seat_changes, _m11_purged_rows_by_time,
                               _m12_variants_by_campaign, _m13_agents_off_other_teams_campaigns]
"""Ordered migrations; migration ``i`` (1-based) brings the schema to version ``i``."""


MIGRATION_PROGRESS_S = 10.0
"""A migration that takes longer logs how long it has run this often."""


def _time_since(start: float) -> Callable[[], str]:
    """How long it has been since ``start`` (a monotonic time), as text."""
    return lambda: f"{time.monotonic() - start:.0f} s"


def schema_version(db: sqlite_utils.Database) -> int:
    """The highest migration applied to ``db`` (0 for a database that has none)."""
    db.conn.execute("CREATE TABLE IF NOT EXISTS schema_version "
                    "(version INTEGER PRIMARY KEY, applied_ts REAL NOT NULL)")
    row = db.conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def ensure_schema(db: sqlite_utils.Database,
                  migrations: list[Migration] | None = None) -> int:
    """Create the base tables, then apply every pending migration in order; return the version."""
    store.ensure_schema(db)
    steps = MIGRATIONS if migrations is None else migrations
    current = schema_version(db)
    for number, migrate in enumerate(steps, start=1):
        if number <= current:
            continue
        log.info("applying dashboard migration %d of %d (%s)", number, len(steps), migrate.__doc__)
        # (an index over months of rows takes minutes: said every MIGRATION_PROGRESS_S, and
        # Ctrl-C stops it at once, the migration run again whole by the next start)
        start = time.monotonic()
        with db.conn, store.watched(db.conn, f"dashboard migration {number}",
                                    _time_since(start), MIGRATION_PROGRESS_S):
            migrate(db)
            db.conn.execute("INSERT INTO schema_version (version, applied_ts) VALUES (?, ?)",
                            (number, time.time()))
        if time.monotonic() - start >= 1.0:  # (a new database's are said once, not twice)
            log.info("applied dashboard migration %d in %.0f s", number,
                     time.monotonic() - start)
        current = number
    _ensure_author_columns(db)
    return current


AUTHOR_COLUMNS = (("calls", "created_by"), ("variants", "created_by"))
"""Who recorded a call or added a variant (NULL for rows from before these columns)."""


def _ensure_author_columns(db: sqlite_utils.Database) -> None:
    """Add :data:`AUTHOR_COLUMNS` to a database that lacks them (idempotent)."""
    for table, column in AUTHOR_COLUMNS:
        if column not in db.table(table).columns_dict:
            db.table(table).add_column(column, str)


# ---------------------------------------------------------------------------- settings
def get_setting(db: sqlite_utils.Database, key: str, default: str | None = None) -> str | None:
    """A value of the ``app_settings`` table (admin-editable switches)."""
    row = db.conn.execute("SELECT value FROM app_settings WHERE key = ?", (key,)).fetchone()
    return default if row is None else str(row[0])


def set_setting(db: sqlite_utils.Database, key: str, value: str) -> None:
    """Store one ``app_settings`` value."""
    with db.conn:
        db.conn.execute("INSERT INTO app_settings (key, value) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))


# --------------------------------------------------------------------------- inventory
def assign_seat(db: sqlite_utils.Database, box: str, agent: str | None,
                now: float | None = None) -> bool:
    """Seat ``agent`` at ``box`` (None frees the seat), keeping the seat history; return whether
    the seat changed hands (``seats.changed_ts``: the box then forgets the agent baselines)."""
    now = time.time() if now is None else now
    row = db.conn.execute("SELECT agent FROM seats WHERE box = ?", (box,)).fetchone()
    current = row[0] if row else None
    if current == agent:
        return False
    db.conn.execute("UPDATE seat_history SET to_ts = ? WHERE box = ? AND to_ts IS NULL",
                    (now, box))
    if agent is not None:
        db.conn.execute("UPDATE seat_history SET to_ts = ? WHERE agent = ? AND to_ts IS NULL",
                        (now, agent))
        db.conn.execute("UPDATE seats SET agent = NULL, changed_ts = ? WHERE agent = ? AND "
                        "box != ?", (now, agent, box))
        db.conn.execute("INSERT INTO seat_history (box, agent, from_ts) VALUES (?, ?, ?)",
                        (box, agent, now))
    db.conn.execute("UPDATE seats SET agent = ?, changed_ts = ? WHERE box = ?", (agent, now, box))
    return True


_FILLERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
"""Letters and symbols that draw nothing: the Hangul fillers, the blank Braille pattern."""


def _invisible(ch: str) -> bool:
    """A space, or a character that shows nothing (zero-width, control, format, filler)."""
    return ch.isspace() or ch in _FILLERS or unicodedata.category(ch) in (
        "Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp")


def visible_name(text: str) -> str:
    """``text`` without the spaces and invisible characters (U+200B, U+2060, U+FEFF...) at its
    ends, or "" when nothing of it shows: a free-text name (a campaign's, a variant's, a goal's,
    an agent's, a seat's) so made is blank, as one of spaces only."""
    start, end = 0, len(text)
    while start < end and _invisible(text[start]):
        start += 1
    while end > start and _invisible(text[end - 1]):
        end -= 1
    name = text[start:end]
    shown = any(not _invisible(ch) and not unicodedata.category(ch).startswith("M") for ch in name)
    return name if shown else ""


def import_inventory(db: sqlite_utils.Database, rows: Iterable[dict[str, Any]],
                     site: str | None = None, now: float | None = None,
                     actor: str | None = None) -> int:
    """Record boxes, seats, agents and teams from the provisioning inventory.

    Args:
        db: The open database (schema ensured).
        rows: Dicts with ``box`` (required), and optionally ``seat`` (its label on the map),
            ``agent``, ``team``, ``agent_name``, ``row``, ``col``, ``site``, and ``line`` (the
            CSV line it came from, for messages).
        site: Default site of the rows.
        now: Wall-clock seconds used for the seat history (defaults to the current time).
        actor: Who imports (the command line's user); when given, each seat given to another
            agent is audited: ``assign_seat`` on the agent seated, ``seat_taken`` on the agent
            who sat there (whose baselines the box then forgets).

    Returns:
        The number of rows imported. Re-importing the same rows changes nothing.

    Raises:
        ValueError: a row names a retired box (:func:`retire_box`), an agent or team id
            outside the inventory's rule (:data:`miroir.labels.LABEL_PATTERN`), or a ``row`` or
            ``col`` not in plain digits 0-9 (every such row is named); nothing is imported.
    """
    from miroir import wire

    now = time.time() if now is None else now
    count = 0
    rows = list(rows)
    _check_rows(rows)
    retired = retired_boxes(db)
    with db.conn:
        for r in rows:
            box = wire.check_id(str(r["box"]).strip(), "box")
            if box in retired:
                raise ValueError(f"box {box} was retired (`miroir dashboard retire`): its id is "
                                 "not used again; remove its row")
            row_site = r.get("site") or site
            team = (r.get("team") or "").strip() or None
            agent = (r.get("agent") or "").strip() or None
            if row_site:
                db.conn.execute("INSERT OR IGNORE INTO sites (site, name) VALUES (?, ?)",
                                (row_site, row_site))
            if team:
                db.conn.execute("INSERT OR IGNORE INTO teams (team, name, site) VALUES (?, ?, ?)",
                                (team, team, row_site))
            if agent:
                name = visible_name(str(r.get("agent_name") or "")) or agent
                db.conn.execute(
                    "INSERT INTO agents (agent, name, team, created_ts) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(agent) DO UPDATE SET team = coalesce(excluded.team, team), "
                    "name = CASE WHEN excluded.name != excluded.agent THEN excluded.name "
                    "ELSE name END, active = 1, left_ts = NULL",
                    (agent, name, team, now))
                _leave_other_teams_campaign(db, agent, now, actor)
            label = visible_name(str(r.get("seat") or "")) or box
            db.conn.execute(
                "INSERT INTO seats (box, site, label, row, col) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(box) DO UPDATE SET site = coalesce(excluded.site, site), "
                "label = excluded.label, row = coalesce(excluded.row, row), "
                "col = coalesce(excluded.col, col)",
                (box, row_site, label, _int_or_none(r.get("row"), "row"),
                 _int_or_none(r.get("col"), "col")))
            before = db.conn.execute("SELECT agent FROM seats WHERE box = ?", (box,)).fetchone()
            if agent and assign_seat(db, box, agent, now) and actor is not None:
                detail = json.dumps({"box": box, "seat": label}, separators=(",", ":"),
                                    sort_keys=True)
                db.conn.execute(
                    "INSERT INTO audit_log (ts, actor, actor_role, agent, action, detail) "
                    "VALUES (?, ?, 'it', ?, 'assign_seat', ?)", (now, actor, agent, detail))
                if before is not None and before[0] is not None:  # and its box forgets them
                    db.conn.execute(
                        "INSERT INTO audit_log (ts, actor, actor_role, agent, action, detail) "
                        "VALUES (?, ?, 'it', ?, 'seat_taken', ?)", (now, actor, before[0], detail))
            count += 1
    return count


def _leave_other_teams_campaign(db: sqlite_utils.Database, agent: str, now: float,
                                actor: str | None) -> None:
    """Take ``agent`` off their campaign if it is another team's than theirs (moved to another
    team): a team's campaign takes its team's agents only (``api.OTHER_TEAM``). Audited on the
    agent when ``actor`` is given, as the seats are."""
    left = db.conn.execute(
        "SELECT c.campaign FROM agents a JOIN campaigns c ON c.campaign = a.campaign "
        "WHERE a.agent = ? AND c.team IS NOT NULL AND c.team IS NOT a.team", (agent,)).fetchone()
    if left is None:
        return
    db.conn.execute("UPDATE agents SET campaign = NULL, variant = NULL WHERE agent = ?", (agent,))
    log.info("agent %s moved to another team: taken off campaign %s", agent, left[0])
    if actor is not None:
        db.conn.execute(
            "INSERT INTO audit_log (ts, actor, actor_role, agent, action, detail) "
            "VALUES (?, ?, 'it', ?, 'campaign_leave', ?)",
            (now, actor, agent, json.dumps({"campaign": left[0]}, separators=(",", ":"))))


def _check_rows(rows: list[dict[str, Any]]) -> None:
    """Refuse agent and team ids outside the inventory's rule (the one ``miroir provision``
    applies): an id is a segment of the dashboard's paths, and one with a ``/`` made the agent's
    page, exports and erasure unreachable; and a seat's ``row`` or ``col`` on the floor map that
    is not plain digits (:func:`miroir.numbers.whole_number`). Every bad row is named."""
    from miroir.labels import LABEL_RULE, is_label

    problems = []
    for i, r in enumerate(rows, start=1):
        where = f"line {r['line']}" if r.get("line") else f"row {i}"
        box = str(r.get("box", "")).strip()
        for name in ("agent", "team"):
            value = str(r.get(name) or "").strip()
            if value and not is_label(value):
                problems.append(f"{where} (box {box}): {name} {value!r} must be {LABEL_RULE}")
        for name in ("row", "col"):
            try:
                _int_or_none(r.get(name), name)
            except ValueError as exc:
                problems.append(f"{where} (box {box}): {exc} (got {str(r.get(name))!r})")
    if problems:
        raise ValueError("; ".join(problems))


def _int_or_none(v: Any, field: str) -> int | None:
    """A CSV cell (or a number) as a whole number; None when empty."""
    from miroir.numbers import whole_number

    if isinstance(v, int):
        return v
    text = "" if v is None else str(v).strip()  # spaces around a cell, as the other columns'
    return whole_number(text, field) if text else None


# ------------------------------------------------------------------------- retirement
def retired_boxes(db: sqlite_utils.Database) -> set[str]:
    """The boxes retired from this site (their messages are refused, their history kept)."""
    return {str(r[0]) for r in db.conn.execute("SELECT box FROM retired_boxes").fetchall()}


def retire_box(db: sqlite_utils.Database, box: str, actor: str,
               now: float | None = None) -> dict[str, Any]:
    """Take a box off the site for good (revoked, lost, replaced), keeping its history.

    The box leaves the floor, the IT page, the Prometheus series and the alerts (its open alert
    is closed), its seat is freed (the seat history keeps who sat there, for the retention
    period), the ingest refuses what it still publishes (a retained status comes back at every
    restart), and the act is audited.

    Args:
        db: The open database (schema ensured).
        box: The box id.
        actor: Who retired it (the command line's user), for the audit log.
        now: Wall-clock seconds since the epoch.

    Returns:
        ``{"box", "retired": False}`` if it was retired already (``retired_ts`` then), else
        ``{"box", "retired": True, "seat", "agent", "alerts_closed"}``.

    Raises:
        ValueError: ``box`` is no box id, or this dashboard never knew it.
    """
    from miroir import wire

    box = wire.check_id(box, "box")
    now = time.time() if now is None else now
    with db.conn:
        row = db.conn.execute("SELECT retired_ts FROM retired_boxes WHERE box = ?",
                              (box,)).fetchone()
        if row is not None:
            return {"box": box, "retired": False, "retired_ts": float(row[0])}
        seat = db.conn.execute("SELECT label, agent FROM seats WHERE box = ?", (box,)).fetchone()
        seen = db.conn.execute("SELECT 1 FROM boxes WHERE box = ?", (box,)).fetchone()
        if seat is None and seen is None:
            raise ValueError(f"box {box} is not known to this dashboard (no seat, never heard)")
        label, agent = (seat[0], seat[1]) if seat else (None, None)
        db.conn.execute("INSERT INTO retired_boxes (box, retired_ts, retired_by) VALUES (?, ?, ?)",
                        (box, now, actor))
        assign_seat(db, box, None, now)  # closes its seat history
        db.conn.execute("DELETE FROM seats WHERE box = ?", (box,))
        closed = db.conn.execute("UPDATE alerts SET cleared_ts = ? WHERE box = ? AND "
                                 "cleared_ts IS NULL", (now, box)).rowcount
        detail = {"box": box, "seat": label, "alerts_closed": closed}
        db.conn.execute(
            "INSERT INTO audit_log (ts, actor, actor_role, agent, action, detail) "
            "VALUES (?, ?, 'it', ?, 'retire_box', ?)",
            (now, actor, agent, json.dumps(detail, separators=(",", ":"), sort_keys=True)))
    log.info("retired box %s (seat %s, %d alert(s) closed) by %s", box, label, closed, actor)
    return {"box": box, "retired": True, "seat": label, "agent": agent, "alerts_closed": closed}

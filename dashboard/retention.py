"""Retention purge, an agent's export and erasure, backup and restore of the database."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pydantic_core
import sqlite_utils

from miroir import wire

from . import analytics, auth, i18n, registry
from . import db as store

log = logging.getLogger(__name__)


def purge(db: sqlite_utils.Database, *, metrics_days: float, aggregates_days: float,
          audit_days: float, now: float | None = None,
          session_idle_s: float | None = None) -> dict[str, int]:
    """Delete everything older than its retention limit; return the rows deleted per table.

    An erasure a stopped server left under way is finished first (:func:`finish_erasures`).
    Per-second metrics are rolled up into daily per-agent means (every row that arrived until
    a minute before, :func:`dashboard.analytics.roll_up`), which are kept for
    ``aggregates_days`` with calls, flags and goals; they are rolled up and deleted
    :data:`PURGE_BATCH_ROWS` rows per transaction, so the ingest and the pages are never kept
    waiting for the whole purge (a busy writer gives up after 5 s: pages answered 500). The
    audit log, login attempts and cleared fleet alerts are kept ``audit_days`` (the audit
    log's delete trigger allows only rows below the floor this function sets). Browser marks
    past :data:`dashboard.auth.DEVICE_MAX_AGE_S` and sessions that can no longer be used go
    too, whether or not anyone logs in. Every table is purged the same way, a batch of
    :data:`PURGE_BATCH_ROWS` rows per transaction (:func:`_delete_rows`).

    Args:
        db: The open database (schema ensured).
        metrics_days: Retention of per-second metrics and events, days.
        aggregates_days: Retention of daily aggregates, calls, flags and goals, days.
        audit_days: Retention of the audit log and login attempts, days.
        now: Wall-clock seconds (a controlled clock in tests).
        session_idle_s: Idle expiry of a session, seconds (None: only their maximum age).
    """
    now = time.time() if now is None else now
    m_cut = now - metrics_days * wire.DAY_S
    a_cut = now - aggregates_days * wire.DAY_S
    au_cut = now - audit_days * wire.DAY_S
    erased = finish_erasures(db)
    if any(erased.values()):
        log.info("finished an erasure a stopped server left under way: %s", erased)
    out = _purge_stream_rows(db, m_cut)
    day = time.strftime("%Y-%m-%d", time.gmtime(a_cut))
    idle_cut = now - (auth.SESSION_MAX_AGE_S if session_idle_s is None else session_idle_s)
    out["events"] += _delete_rows(db, "events", "ts < ?", (m_cut,))
    for table, where, args in (
            ("quarantine", "received_ts < ?", (m_cut,)),
            ("daily_aggregates", "day < ?", (day,)),
            ("calls", "start_ts < ?", (a_cut,)),
            ("flags", "ts < ?", (a_cut,)),
            ("goals", "active = 0 AND created_ts < ?", (a_cut,)),
            ("seat_history", "to_ts IS NOT NULL AND to_ts < ?", (a_cut,)),
            ("audit_log", "ts < ?", (au_cut,)),
            ("login_attempts", "ts < ?", (au_cut,)),
            ("alerts", "cleared_ts IS NOT NULL AND cleared_ts < ?", (au_cut,)),
            ("known_devices", "last_login_ts < ?", (now - auth.DEVICE_MAX_AGE_S,)),
            ("sessions", "created_ts < ? OR last_seen_ts < ?",
             (now - auth.SESSION_MAX_AGE_S, idle_cut))):
        out[table] = _delete_rows(db, table, where, args,
                                  audit_floor_ts=au_cut if table == "audit_log" else None)
    log.info("retention purge: %s", out)
    flush_deleted(db)
    return out


FLUSH_WAIT_MS = 250
"""How long :func:`flush_deleted` waits for the database's other users (the ingest's writes,
a page's read) to empty the log once every change is copied; writers wait that long at most."""


def flush_deleted(db: sqlite_utils.Database) -> bool:
    """Copy every change in the write-ahead log into the database file and empty the log, so
    that deleted rows are no longer readable in either (deleted content is zeroed:
    ``secure_delete``, :func:`dashboard.db.open_db`); they stayed in the log, and in the file,
    until SQLite's next automatic checkpoint. Return False when another connection's read or
    write kept it from finishing (the next purge, within the hour, tries again).

    The copy is a PASSIVE checkpoint, which never holds writers; only when it copied the whole
    log is the log emptied (TRUNCATE, which holds them until the readers let go, at most
    :data:`FLUSH_WAIT_MS`). A read that still sees the deleted rows (an export begun before)
    keeps the copy from finishing, and the log cannot be emptied under it: it is left at once,
    where the TRUNCATE held every write :data:`FLUSH_WAIT_MS` for nothing."""
    _, log_pages, done_pages = db.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    if done_pages < log_pages:
        log.info("deleted rows left in the write-ahead log (%s of %s pages copied): another "
                 "connection still reads them; the next purge tries again", done_pages, log_pages)
        return False
    db.conn.execute(f"PRAGMA busy_timeout={FLUSH_WAIT_MS}")
    try:
        busy, log_pages, done_pages = db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        db.conn.execute(f"PRAGMA busy_timeout={store.BUSY_TIMEOUT_MS}")
    if busy:
        log.info("deleted rows left in the write-ahead log (%s of %s pages copied): another "
                 "connection is using it; the next purge tries again", done_pages, log_pages)
    return not busy


PURGE_BATCH_ROWS = 2000
"""Rows the purge deletes per transaction (of metrics, of the audit log, ...): the ingest and
the pages, which write too (sessions, audit log), wait for one batch at most, not for the whole
purge."""
PURGE_PAUSE_S = 0.02
"""Pause between two batches of the purge, so that a waiting writer takes the lock."""
PURGE_PROGRESS_S = 10.0
"""A purge that takes longer logs how far it has gone this often (a large backlog takes hours)."""


def _purge_stream_rows(db: sqlite_utils.Database, cut_ts: float) -> dict[str, int]:
    """Roll up every row ingested until a minute ago (:func:`dashboard.analytics.roll_up`),
    then delete the metrics (and the events of the same seconds) older than ``cut_ts``,
    :data:`PURGE_BATCH_ROWS` metrics rows per transaction, oldest first, each batch's rows
    that arrived since the roll-up added to the daily means first; every
    :data:`PURGE_PROGRESS_S`, a log line says how far it has gone."""
    log.info("retention purge: daily means brought up to date, then metrics and events before "
             "%s deleted", utc_iso(cut_ts))
    analytics.roll_up(db, time.time() - analytics.ROLL_UP_SETTLE_S)
    out = {"metrics": 0, "events": 0}
    said_ts = time.time()
    while True:
        end_ts = _batch_end(db, cut_ts, PURGE_BATCH_ROWS)
        with db.conn:
            db.conn.execute("BEGIN IMMEDIATE")
            analytics.roll_up_past_marks(db, end_ts)
            out["metrics"] += db.conn.execute("DELETE FROM metrics WHERE ts < ?",
                                              (end_ts,)).rowcount
            out["events"] += db.conn.execute("DELETE FROM events WHERE ts < ?",
                                             (end_ts,)).rowcount
        if end_ts >= cut_ts:
            return out
        if time.time() - said_ts >= PURGE_PROGRESS_S:
            said_ts = time.time()
            log.info("retention purge under way: %d metrics rows and %d events deleted, up to "
                     "%s of %s", out["metrics"], out["events"], utc_iso(end_ts), utc_iso(cut_ts))
        time.sleep(PURGE_PAUSE_S)


def _batch_end(db: sqlite_utils.Database, cut_ts: float, rows: int) -> float:
    """The time below which lie the next ``rows`` metrics rows to purge (``cut_ts`` at most;
    more rows when the oldest second holds more)."""
    row = db.conn.execute("SELECT ts FROM metrics WHERE ts < ? ORDER BY ts LIMIT 1 OFFSET ?",
                          (cut_ts, rows)).fetchone()
    if row is None:
        return cut_ts
    first = db.conn.execute("SELECT min(ts) FROM metrics").fetchone()[0]
    return float(row[0]) if row[0] > first else math.nextafter(float(first), math.inf)


def purge_with(db: sqlite_utils.Database, settings: Any, now: float | None = None) -> dict[str, int]:
    """:func:`purge` with the limits of the dashboard's settings."""
    return purge(db, metrics_days=settings.retention_metrics_days,
                 aggregates_days=settings.retention_aggregates_days,
                 audit_days=settings.retention_audit_days, now=now,
                 session_idle_s=settings.session_idle_s)


# ------------------------------------------------------------------------- CSV export
EXPORT_BATCH_ROWS = 1000
"""Rows an export reads from SQLite and writes out at a time: its memory does not grow with
the rows exported (a month of one agent's per-second rows is about 860,000)."""


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet opening a CSV takes a cell starting with for a formula (OWASP's list)."""


def spreadsheet_safe(value: object) -> object:
    """``value``, or for text that a spreadsheet would run as a formula (an agent id from the
    inventory such as ``=HYPERLINK(...)``), the same text after an apostrophe: read as text.
    Numbers are left as they are (``-3.5`` is a number, not a formula)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def metrics_csv_chunks(db: sqlite_utils.Database, agents: list[str],
                       since_ts: float = 0.0) -> Iterator[str]:
    """CSV of the per-second metrics of ``agents`` (one row per second, ISO UTC time, the talk
    state ``hold`` for a second on hold: :data:`analytics.TALK_STATE_COLUMN`), in pieces
    of :data:`EXPORT_BATCH_ROWS` rows; no text cell starts a formula (:func:`spreadsheet_safe`:
    the agent id and the box id; the metric columns are numbers)."""
    names = analytics.metric_names(db)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["agent", "box", "seq", "time_utc", "ts", "talk_state", *names])
    # the agent is the free text; the rest are ids, enums and numbers
    yield from _chunks(buf, (
        w.writerow([cell, spreadsheet_safe(r["box"]), r["seq"], utc_iso(r["ts"]), r["ts"],
                    r["talk_state"], *(r[n] for n in names)])
        for agent, cell in ((a, spreadsheet_safe(a)) for a in agents)
        for r in analytics.iter_agent_metrics(db, agent, since_ts, EXPORT_BATCH_ROWS)))


def _chunks(buf: io.StringIO, rows: Iterable[object]) -> Iterator[str]:
    """Write ``rows`` into ``buf`` (each item is one row written), yielding its text every
    :data:`EXPORT_BATCH_ROWS` rows and what is left at the end."""
    for count, _ in enumerate(rows, 1):
        if count % EXPORT_BATCH_ROWS == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


EXCEL_SEPARATORS = {"fr": (";", ","), "en": (",", ".")}
"""(column separator, decimal mark) of the Excel export in each language: what Excel set to
that language opens in columns (French Excel splits on ``;`` and reads ``-25,9`` as a number)."""


def _excel_number(value: object, scale: float, decimal: str) -> object:
    """A metric's number for the Excel export: times ``scale`` (100 for a 0..1 share, as the
    pages show it), with ``decimal`` as its mark; empty when missing, anything else as it is."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "" if value is None else value
    if not math.isfinite(value):
        return ""
    text = f"{value * scale:.6f}".rstrip("0").rstrip(".")
    return ("0" if text == "-0" else text).replace(".", decimal)


def metrics_excel_chunks(db: sqlite_utils.Database, agents: list[str],
                         lang: str = "fr") -> Iterator[str]:
    """The rows of :func:`metrics_csv_chunks` as Excel in ``lang`` opens them in columns: UTF-8
    with a byte order mark, :data:`EXCEL_SEPARATORS`, the pages' column labels with their unit,
    shares in %, the time as ``2026-11-28 15:12:59`` (UTC), the talk state as the pages name it
    ("Agent parle"); no text cell starts a formula."""
    sep, decimal = EXCEL_SEPARATORS["en" if lang == "en" else "fr"]
    states = {s: i18n.translate(lang, f"state.{s}") for s in (*wire.TALK_STATES, "hold")}
    names = analytics.metric_names(db)
    described = [registry.describe(n, lang) for n in names]
    scales = [100.0 if d["unit"] == "%" else 1.0 for d in described]
    heads = [f"{d['label']} ({d['unit']})" if d["unit"] else d["label"] for d in described]
    fixed = (["Agent", "Box", "Seq", "Time (UTC)", "Talk state"] if lang == "en"
             else ["Agent", "Boîtier", "N°", "Heure (UTC)", "Tour de parole"])
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=sep, lineterminator="\r\n")
    buf.write("\ufeff")
    w.writerow([spreadsheet_safe(h) for h in (*fixed, *heads)])
    yield from _chunks(buf, (
        w.writerow([cell, spreadsheet_safe(r["box"]), r["seq"],
                    utc_iso(r["ts"]).replace("T", " ").rstrip("Z"),
                    states.get(r["talk_state"], r["talk_state"]),
                    *(_excel_number(r[n], k, decimal) for n, k in zip(names, scales, strict=True))])
        for agent, cell in ((a, spreadsheet_safe(a)) for a in agents)
        for r in analytics.iter_agent_metrics(db, agent, 0.0, EXPORT_BATCH_ROWS)))


def utc_iso(ts: float) -> str:
    """Seconds since the epoch as an ISO 8601 UTC time, to the second (``2026-11-28T15:12:59Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _with_utc(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with a readable UTC time beside each time field in seconds since the epoch
    (``ts`` -> ``time_utc``, ``from_ts`` -> ``from_utc``), as the CSV export has."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        out[key] = value
        if (key == "ts" or key.endswith("_ts")) and isinstance(value, int | float) \
                and not isinstance(value, bool) and math.isfinite(value):
            out["time_utc" if key == "ts" else f"{key[:-3]}_utc"] = utc_iso(value)
    return out


def _agent_export_parts(db: sqlite_utils.Database,
                        agent: str) -> list[tuple[str, Iterator[dict[str, Any]]]]:
    """The sections of an agent's export, in order, each an iterator over its rows."""
    def rows(sql: str, *args: Any) -> Iterator[dict[str, Any]]:
        cur = db.conn.execute(sql, args)
        keys = [c[0] for c in cur.description]
        while batch := cur.fetchmany(EXPORT_BATCH_ROWS):
            for r in batch:
                yield _with_utc(dict(zip(keys, r, strict=True)))

    users = "SELECT username FROM users WHERE agent = ?"
    return [
        ("agent", rows("SELECT * FROM agents WHERE agent = ?", agent)),
        ("account", rows("SELECT username, role, lang, created_ts, disabled, "
                         "totp_secret IS NOT NULL AS totp_enrolled FROM users WHERE agent = ?",
                         agent)),
        ("login_attempts", rows(f"SELECT * FROM login_attempts WHERE username IN ({users}) "
                                "ORDER BY id", agent)),
        # when they logged in and were last active; never a token (the hash would still be one)
        ("sessions", rows(f"SELECT created_ts, last_seen_ts, stage FROM sessions "
                          f"WHERE username IN ({users}) ORDER BY created_ts", agent)),
        ("known_browsers", rows(f"SELECT last_login_ts FROM known_devices "
                                f"WHERE username IN ({users}) ORDER BY last_login_ts", agent)),
        ("seat_history", rows("SELECT * FROM seat_history WHERE agent = ?", agent)),
        # every stored column, as received (the charts' CSV keeps the charted metrics only)
        ("metrics", rows(f"SELECT m.* FROM metrics m {analytics._windows_sql('m')} "
                         "WHERE h.agent = ? ORDER BY m.ts", agent)),
        ("events", rows(f"SELECT e.* FROM events e {analytics._windows_sql('e')} "
                        "WHERE h.agent = ? ORDER BY e.ts", agent)),
        ("daily_aggregates", rows("SELECT * FROM daily_aggregates WHERE agent = ?", agent)),
        ("calls", rows("SELECT * FROM calls WHERE agent = ?", agent)),
        ("flags", rows("SELECT * FROM flags WHERE agent = ?", agent)),
        ("goals", rows("SELECT * FROM goals WHERE agent = ?", agent)),
        ("audit_log", rows("SELECT * FROM audit_log WHERE agent = ?", agent)),
    ]


def agent_export(db: sqlite_utils.Database, agent: str) -> dict[str, Any]:
    """Everything stored about one agent (the right of access), as JSON-ready data: every
    column of their metrics and events (call summaries, cue evidence), their account (no
    password hash, no TOTP secret), its login attempts, sessions and known browsers (their
    times, no token); each time also as ISO UTC."""
    return {name: list(it) for name, it in _agent_export_parts(db, agent)}


def _json(value: Any) -> str:
    # as FastAPI answers a returned dict: pydantic's JSON (NaN and infinities as null)
    return pydantic_core.to_json(value, inf_nan_mode="null").decode("utf-8")


def agent_export_chunks(db: sqlite_utils.Database, agent: str) -> Iterator[str]:
    """:func:`agent_export` as JSON text, in pieces of :data:`EXPORT_BATCH_ROWS` rows: the same
    text FastAPI writes for the dict, without holding the rows."""
    sep = "{"
    for name, it in _agent_export_parts(db, agent):
        parts = [f"{sep}{_json(name)}:["]
        for i, row in enumerate(it):
            parts.append(("," if i else "") + _json(row))
            if len(parts) >= EXPORT_BATCH_ROWS:
                yield "".join(parts)
                parts = []
        parts.append("]")
        yield "".join(parts)
        sep = ","
    yield "}"


def stream_export(db_path: Path, chunks: Callable[[sqlite_utils.Database], Iterator[str]]
                  ) -> Iterator[bytes]:
    """Run ``chunks`` on a connection of its own, in one read transaction (an export is one
    consistent snapshot, however long the client takes to read it), encoded as UTF-8."""
    db = store.open_db(db_path)
    try:
        db.conn.execute("BEGIN")
        for chunk in chunks(db):
            yield chunk.encode("utf-8")
    finally:
        if db.conn.in_transaction:
            db.conn.rollback()
        db.conn.close()


def erase_agent(db: sqlite_utils.Database, agent: str, now: float | None = None) -> dict[str, int]:
    """Erase an agent who left, to the end: :func:`begin_erasure`, then :func:`finish_erasures`
    and :func:`flush_deleted`; return the rows deleted per table (the CLI and tests; the
    dashboard's route answers after the first step and leaves the rest to its purge loop)."""
    out = begin_erasure(db, agent, now)
    out.update(finish_erasures(db))
    flush_deleted(db)
    return out


def begin_erasure(db: sqlite_utils.Database, agent: str,
                  now: float | None = None) -> dict[str, int]:
    """Make an agent who left unreachable: delete their daily means, coaching, calls, seats,
    account with its sessions, known browsers and login attempts, and note their seat windows;
    return the rows deleted per table (the per-second rows are not among them).

    One transaction deletes everything but the per-second rows and notes the agent's seat
    windows (``erasures``, no name in it): from then on no page reaches those rows, which are
    read through the agent's seat history. :func:`finish_erasures` then deletes them
    :data:`PURGE_BATCH_ROWS` rows per transaction, so that the ingest and the pages wait for
    one batch at most (a month of one agent, a million rows, held the database 28 s in one
    transaction: the boxes' rows waited, pages answered 500); :func:`erasure_rows_left` counts
    what is left. A server stopped before the end finishes at its next start (the retention
    purge).

    The audit log entries about them are kept (they record who accessed the data and are
    themselves purged by retention); backups taken before, and what their box still holds
    (its outbox's sent messages), are out of this function's reach (docs/privacy.md). Their
    seat is freed: its box forgets their learned baselines once online (``forget_baselines``).
    """
    now = time.time() if now is None else now
    out: dict[str, int] = {}
    with db.conn:
        db.conn.execute("BEGIN IMMEDIATE")
        _note_erased_windows(db, agent, now)
        for table in ("daily_aggregates", "calls", "flags", "goals", "seat_history"):
            out[table] = db.conn.execute(f"DELETE FROM {table} WHERE agent = ?",
                                         (agent,)).rowcount
        users = [r[0] for r in db.conn.execute("SELECT username FROM users WHERE agent = ?",
                                               (agent,)).fetchall()]
        out["login_attempts"] = 0
        for u in users:
            out["login_attempts"] += db.conn.execute(
                "DELETE FROM login_attempts WHERE username = ?", (u,)).rowcount
            db.conn.execute("DELETE FROM sessions WHERE username = ?", (u,))
            db.conn.execute("DELETE FROM user_teams WHERE username = ?", (u,))
            db.conn.execute("DELETE FROM known_devices WHERE username = ?", (u,))
        out["users"] = db.conn.execute("DELETE FROM users WHERE agent = ?", (agent,)).rowcount
        db.conn.execute("UPDATE seats SET agent = NULL, changed_ts = ? WHERE agent = ?",
                        (time.time(), agent))  # the box forgets the agent's baselines
        out["agents"] = db.conn.execute("DELETE FROM agents WHERE agent = ?", (agent,)).rowcount
    return out


def erasure_rows_left(db: sqlite_utils.Database) -> dict[str, int]:
    """The per-second rows (metrics, events) that erasures under way have still to delete."""
    out = {"metrics": 0, "events": 0}
    for box, from_ts, to_ts in db.conn.execute(
            "SELECT box, from_ts, to_ts FROM erasures").fetchall():
        for table in out:
            out[table] += db.conn.execute(
                f"SELECT count(*) FROM {table} WHERE box = ? AND ts >= ? AND ts < ?",
                (box, from_ts, to_ts)).fetchone()[0]
    return out


def _note_erased_windows(db: sqlite_utils.Database, agent: str, now: float) -> None:
    """Copy the agent's seat windows to ``erasures``; an open one ends after the newest row its
    box has sent (a box's clock may run ahead of the server's)."""
    for box, from_ts, to_ts in db.conn.execute(
            "SELECT box, from_ts, to_ts FROM seat_history WHERE agent = ?", (agent,)).fetchall():
        if to_ts is None:
            newest = [db.conn.execute(f"SELECT max(ts) FROM {t} WHERE box = ?", (box,)).fetchone()[0]
                      for t in ("metrics", "events")]
            to_ts = math.nextafter(max([now, *(t for t in newest if t is not None)]), math.inf)
        db.conn.execute("INSERT INTO erasures (box, from_ts, to_ts) VALUES (?, ?, ?)",
                        (box, from_ts, to_ts))


def finish_erasures(db: sqlite_utils.Database) -> dict[str, int]:
    """Delete the metrics and events of the seat windows of erasures under way
    (:func:`erase_agent`), :data:`PURGE_BATCH_ROWS` rows per transaction, and each window once
    empty; return the rows deleted per table. Safe to run again, and at the same time."""
    out = {"metrics": 0, "events": 0}
    for window, box, from_ts, to_ts in db.conn.execute(
            "SELECT id, box, from_ts, to_ts FROM erasures ORDER BY id").fetchall():
        for table in out:
            out[table] += _delete_window_rows(db, table, box, from_ts, to_ts)
        with db.conn:
            db.conn.execute("DELETE FROM erasures WHERE id = ?", (window,))
    return out


def _delete_window_rows(db: sqlite_utils.Database, table: str, box: str, from_ts: float,
                        to_ts: float) -> int:
    """Delete ``box``'s rows of ``table`` from ``from_ts`` to ``to_ts``, a batch at a time."""
    return _delete_rows(db, table, "box = ? AND ts >= ? AND ts < ?", (box, from_ts, to_ts))


def _delete_rows(db: sqlite_utils.Database, table: str, where: str, args: tuple[Any, ...],
                 audit_floor_ts: float | None = None) -> int:
    """Delete the rows of ``table`` that match ``where``, :data:`PURGE_BATCH_ROWS` per
    transaction with a pause between two, so that a waiting writer gets in; return how many.

    With ``audit_floor_ts`` (the audit log), each batch's transaction opens the audit log's delete
    trigger below that time and closes it again before it commits: no other connection ever
    sees it open."""
    deleted = 0
    while True:
        with db.conn:
            db.conn.execute("BEGIN IMMEDIATE")
            if audit_floor_ts is not None:
                db.conn.execute("INSERT INTO app_settings (key, value) VALUES "
                                "('audit_purge_before_ts', ?) ON CONFLICT(key) DO UPDATE SET "
                                "value = excluded.value", (repr(audit_floor_ts),))
            n = db.conn.execute(
                f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {where} "
                "LIMIT ?)", (*args, PURGE_BATCH_ROWS)).rowcount
            if audit_floor_ts is not None:
                db.conn.execute("UPDATE app_settings SET value = '0' "
                                "WHERE key = 'audit_purge_before_ts'")
        deleted += n
        if n < PURGE_BATCH_ROWS:
            return deleted
        time.sleep(PURGE_PAUSE_S)


# --------------------------------------------------------------------- backup/restore
BACKUP_TABLES = ("users", "boxes", "metrics", "audit_log")
"""Tables every dashboard database has: a file without them is not a dashboard backup."""


def _missing_tables(con: sqlite3.Connection) -> list[str]:
    """The :data:`BACKUP_TABLES` that the database of ``con`` lacks."""
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return [t for t in BACKUP_TABLES if t not in tables]


BACKUP_PROGRESS_S = 10.0
"""A backup or a restore that takes longer logs how far it has gone this often."""
RESTORE_STEP_PAGES = 1024
"""Pages a restore copies between two looks at the clock and for Ctrl-C (4 MB of 4-KB pages)."""


def _size_mb(path: Path) -> float:
    """The size of ``path`` in MB (0 when it is not there)."""
    try:
        return path.stat().st_size / 1e6
    except OSError:
        return 0.0


def backup(db_path: Path, dest: Path) -> Path:
    """Consistent online copy of the database (``VACUUM INTO``, one read transaction: safe while
    serving), stopped at once by Ctrl-C with nothing left at ``dest``; a long one logs how far
    it has got every :data:`BACKUP_PROGRESS_S`.

    Raises:
        ValueError: no dashboard database at ``db_path`` (nothing is written, nor made there).
    """
    dest = Path(dest)
    if not Path(db_path).is_file():  # SQLite would make an empty one, and back that up
        raise ValueError(f"no dashboard database at {db_path} (MIROIR_DASH_DB_PATH): "
                         "nothing backed up")
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)  # (another file left as it is)
    try:
        missing = _missing_tables(con)
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{db_path} is not a dashboard database ({exc}): nothing backed up"
                         ) from None
    finally:
        con.close()
    if missing:
        raise ValueError(f"{db_path} is not a dashboard database (no {', '.join(missing)} table): "
                         "nothing backed up")
    src = store.open_db(db_path)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:  # made private before a byte of personal data is in it; SQLite fills the empty file
            os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise FileExistsError(f"{dest} exists; refusing to overwrite a backup") from None
        try:
            # (the backup API in one step let Ctrl-C wait for the end of the copy, and in steps
            # it starts again whenever the ingest writes)
            total_mb = _size_mb(Path(db_path)) + _size_mb(Path(f"{db_path}-wal"))
            with store.watched(src.conn, f"backup to {dest}",
                               lambda: f"{_size_mb(dest):.0f} of about {total_mb:.0f} MB",
                               BACKUP_PROGRESS_S):
                src.conn.execute("VACUUM INTO ?", (str(dest),))
            out = sqlite3.connect(str(dest))
            try:  # one plain file, readable where nothing can be written beside it (read-only media)
                out.execute("PRAGMA journal_mode=DELETE")
            finally:
                out.close()
        except BaseException:
            dest.unlink(missing_ok=True)  # no half copy left to be taken for a backup
            raise
    finally:
        src.conn.close()
    return dest


def _read_backup(path: Path) -> sqlite3.Connection:
    """Open a backup read-only, writing nothing beside it (a backup of an earlier version is in
    WAL mode, which SQLite otherwise opens only where it can write its shared-memory file)."""
    uri = f"file:{urllib.parse.quote(str(Path(path).absolute()))}?mode=ro&immutable=1"
    return sqlite3.connect(uri, uri=True)


def check_backup(path: Path) -> None:
    """Raise ValueError unless ``path`` is a whole SQLite file holding a dashboard database."""
    try:
        con = _read_backup(path)
        try:
            start = time.monotonic()
            with store.watched(con, f"check of the backup {path}",
                               lambda: f"{time.monotonic() - start:.0f} s of reading its "
                                       f"{_size_mb(Path(path)):.0f} MB", BACKUP_PROGRESS_S):
                ok = con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            missing = _missing_tables(con)
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise ValueError(f"{path} is not a dashboard backup ({exc})") from None
    if not ok:
        raise ValueError(f"{path} is not a dashboard backup (it fails SQLite's integrity check)")
    if missing:
        raise ValueError(f"{path} is not a dashboard backup (no {', '.join(missing)} table)")
    _check_not_newer(path)


def _check_not_newer(path: Path) -> None:
    """Raise ValueError if ``path`` was made by a dashboard whose schema this one does not know."""
    from . import schema

    con = _read_backup(path)
    try:
        version = int(con.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0)
    except sqlite3.OperationalError:  # no schema_version table: made before migrations
        version = 0
    finally:
        con.close()
    known = len(schema.MIGRATIONS)
    if version > known:
        raise ValueError(f"{path} was made by a newer Miroir (dashboard schema {version}; this one "
                         f"knows up to {known}): install that version or a later one, then restore")


def _exclusive(db_path: Path) -> sqlite3.Connection:
    """A connection holding ``db_path`` for itself; ValueError if another process has it open."""
    dst = sqlite3.connect(str(db_path), timeout=0)
    try:
        dst.execute("PRAGMA locking_mode=EXCLUSIVE")  # kept until closed, past the commit
        dst.execute("BEGIN EXCLUSIVE")
        dst.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        dst.close()
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise
        raise ValueError(f"{db_path} is in use: stop the dashboard first "
                         "(systemctl stop miroir-dashboard); nothing restored") from None
    return dst


def restore(backup_path: Path, db_path: Path) -> None:
    """Replace the database with a backup (refused while the dashboard runs); the schema is then
    upgraded."""
    from . import schema

    backup_path, db_path = Path(backup_path), Path(db_path)
    check_backup(backup_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)  # a new server: the dashboard never ran
    # a running dashboard would go on from the sequence numbers it had, never asking the boxes
    # for what the backup lacks
    dst = _exclusive(db_path)
    said = [time.monotonic()]

    def copied(status: int, remaining: int, pages: int) -> None:
        if time.monotonic() - said[0] >= BACKUP_PROGRESS_S:
            said[0] = time.monotonic()
            log.info("restore of %s under way: %d of %d pages copied", backup_path,
                     pages - remaining, pages)

    try:
        src = _read_backup(backup_path)
        try:  # in steps, so that Ctrl-C stops it between two (the database left as it was)
            src.backup(dst, pages=RESTORE_STEP_PAGES, progress=copied)
        finally:
            src.close()
    finally:
        dst.close()
    db = store.open_db(db_path)
    try:
        schema.ensure_schema(db)
    finally:
        db.conn.close()

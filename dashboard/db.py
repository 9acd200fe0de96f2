"""SQLite storage of the dashboard: schema and idempotent inserts (sqlite-utils)."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from miroir import wire

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
"""How long a statement waits for another connection's write lock before SQLite says busy."""
QUARANTINE_PAYLOAD_MAX_CHARS = 2048

_HEADER = frozenset({"v", "site", "box", "ts", "seq", "state"})


def _columns(kind: str) -> dict[str, type]:
    """SQLite column types of every allow-listed field of a wire kind (header left out)."""
    out: dict[str, type] = {}
    for name, types in wire.ALLOWED_FIELDS[kind].items():
        if name not in _HEADER:
            out[name] = str if types == (str,) else float if float in types else int
    return out


METRIC_COLUMNS = _columns("metrics")
"""Every metrics field of the wire contract is a column: new fields get columns on start-up."""
EVENT_COLUMNS = _columns("event")
STATUS_COLUMNS = _columns("status")
METRIC_FIELDS = tuple(METRIC_COLUMNS)
EVENT_FIELDS = tuple(EVENT_COLUMNS)
STATUS_FIELDS = tuple(STATUS_COLUMNS)
METRIC_FLAGS = tuple(k for k, types in wire.ALLOWED_FIELDS["metrics"].items() if types == (bool,))
"""Metrics fields that are booleans on the wire (stored as 0/1, read back as bool)."""
SEQ_COLUMNS = ("seq_contig", "seq_lost")
"""Per-box gap tracking: every seq up to ``seq_contig`` is stored or known lost (``seq_lost``
counts those the box no longer holds)."""
HEALTH_COLUMNS: dict[str, type] = {"overruns_rise_ts": float, "msgs_per_min": int}
"""Derived fleet-health columns: when the box's audio overrun count last went up (epoch s), and
the messages the ingest received from it per minute over its last counting window."""


def open_db(path: str | Path) -> sqlite_utils.Database:
    """Open (or create) the database in WAL mode with a busy timeout; deleted content is zeroed.

    The connection may be handed between threads but must not be used by two at once.
    """
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    # deleted rows (an erasure, the retention purge) are overwritten, not left in free space;
    # set here rather than left to how SQLite was built
    conn.execute("PRAGMA secure_delete=ON")
    return sqlite_utils.Database(conn)


PROGRESS_STEPS = 20_000
"""SQLite virtual-machine steps between two looks at the clock and for Ctrl-C in :func:`watched`."""


@contextmanager
def watched(con: sqlite3.Connection, what: str, how_far: Callable[[], str],
            every_s: float) -> Iterator[None]:
    """Statements of ``con`` inside it stop at once on Ctrl-C (and the stop signals the CLI turns
    into it: KeyboardInterrupt, raised when SQLite has let go), not when they end; every
    ``every_s``, a log line says how far ``what`` has got (``how_far()``)."""
    stopped: list[bool] = []
    said = [time.monotonic()]

    def step() -> int:  # non-zero: SQLite stops the statement
        try:
            if time.monotonic() - said[0] >= every_s:
                said[0] = time.monotonic()
                log.info("%s under way: %s", what, how_far())
            return 0
        except KeyboardInterrupt:
            stopped.append(True)
            return 1

    con.set_progress_handler(step, PROGRESS_STEPS)
    try:
        yield
    except sqlite3.OperationalError as exc:  # (a stop on entering step() is reported so too)
        if stopped or str(exc) == "interrupted":
            raise KeyboardInterrupt from None
        raise
    finally:
        con.set_progress_handler(None, 0)
    if stopped:
        raise KeyboardInterrupt


@contextmanager
def write_transaction(db: sqlite_utils.Database) -> Iterator[None]:
    """A transaction that holds SQLite's write lock from its first statement (BEGIN IMMEDIATE), so
    what it reads cannot change before it writes, whichever connection or process writes."""
    conn = db.conn
    if conn.in_transaction:
        conn.commit()
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def ensure_schema(db: sqlite_utils.Database) -> None:
    """Create every table and index if missing (idempotent)."""
    db.table("boxes").create(
        {"box": str, "site": str, "state": str, "last_status_ts": float, "last_seen_ts": float,
         "version": str, "seq_last": int, "outbox_depth": int, "dropped": int, "overruns": int,
         "last_metrics_seq": int, "last_event_seq": int},
        pk="box", if_not_exists=True,
    )
    db.table("metrics").create(
        {"box": str, "seq": int, "ts": float, "ingested_ts": float, "t_start": float,
         "window_s": float, "near_speech_ratio": float, "far_speech_ratio": float,
         "near_talking": int, "far_talking": int, "talk_state": str},
        pk=("box", "seq"), not_null={"box", "seq", "ts", "ingested_ts"}, if_not_exists=True,
    )
    db.table("events").create(
        {"box": str, "seq": int, "ts": float, "ingested_ts": float, "name": str,
         "channel": str, "t_audio_s": float},
        pk=("box", "seq"), not_null={"box", "seq", "ts", "ingested_ts"}, if_not_exists=True,
    )
    db.table("quarantine").create(
        {"id": int, "received_ts": float, "topic": str, "reason": str, "payload": str,
         "truncated": int},
        pk="id", if_not_exists=True,
    )
    db.table("users").create(
        {"username": str, "password_hash": str, "role": str, "created_ts": float},
        pk="username", not_null={"password_hash", "role"}, if_not_exists=True,
    )
    db.table("sessions").create(
        {"token_hash": str, "username": str, "csrf": str, "created_ts": float,
         "last_seen_ts": float},
        pk="token_hash", not_null={"username", "csrf", "created_ts", "last_seen_ts"},
        if_not_exists=True,
    )
    boxes = db.table("boxes")
    for column in SEQ_COLUMNS:  # added after the first release: migrate older databases
        if column not in boxes.columns_dict:
            boxes.add_column(column, int)
    for column, typ in HEALTH_COLUMNS.items():
        if column not in boxes.columns_dict:
            boxes.add_column(column, typ)
    # Fields added to the wire contract since the database was made get their columns.
    for table, columns in (("metrics", METRIC_COLUMNS), ("events", EVENT_COLUMNS),
                           ("boxes", STATUS_COLUMNS)):
        existing = db.table(table).columns_dict
        for column, typ in columns.items():
            if column not in existing:
                db.table(table).add_column(column, typ)
    db.table("metrics").create_index(["ts"], if_not_exists=True)
    db.table("sessions").create_index(["last_seen_ts"], if_not_exists=True)


def _insert_or_ignore(db: sqlite_utils.Database, table: str, row: dict[str, Any]) -> bool:
    cols = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    cur = db.conn.execute(f"INSERT OR IGNORE INTO {table} ({cols}) VALUES ({marks})",
                          list(row.values()))
    return cur.rowcount == 1


def _touch_box(db: sqlite_utils.Database, site: str, box: str, seen_ts: float) -> None:
    db.conn.execute(
        "INSERT INTO boxes (box, site, last_seen_ts) VALUES (?, ?, ?) "
        "ON CONFLICT(box) DO UPDATE SET last_seen_ts = max(coalesce(last_seen_ts, 0), "
        "excluded.last_seen_ts)",
        (box, site, seen_ts),
    )


def _insert_stream(db: sqlite_utils.Database, table: str, fields: Iterable[str], seq_column: str,
                   msg: dict[str, Any], ingested_ts: float) -> bool:
    """Insert one validated stream message into ``table`` (``fields`` besides box, seq and times),
    raise the box's ``seq_column`` to its seq; return True if the (box, seq) row was new."""
    row = {"box": msg["box"], "seq": msg["seq"], "ts": float(msg["ts"]),
           "ingested_ts": ingested_ts}
    row.update({k: msg.get(k) for k in fields})
    with db.conn:
        new = _insert_or_ignore(db, table, row)
        if new:
            _touch_box(db, msg["site"], msg["box"], ingested_ts)
            db.conn.execute(
                f"UPDATE boxes SET {seq_column} = max(coalesce({seq_column}, 0), ?) "
                "WHERE box = ?", (msg["seq"], msg["box"]))
    return new


def insert_metrics(db: sqlite_utils.Database, msg: dict[str, Any], ingested_ts: float) -> bool:
    """Insert one validated ``metrics`` message; return True if the (box, seq) row was new.

    Args:
        db: The open database.
        msg: A message accepted by ``wire.validate("metrics", ...)``.
        ingested_ts: Wall-clock time of reception, in seconds since the epoch.
    """
    return _insert_stream(db, "metrics", METRIC_FIELDS, "last_metrics_seq", msg, ingested_ts)


def insert_event(db: sqlite_utils.Database, msg: dict[str, Any], ingested_ts: float) -> bool:
    """Insert one validated ``event`` message; return True if the (box, seq) row was new."""
    return _insert_stream(db, "events", EVENT_FIELDS, "last_event_seq", msg, ingested_ts)


def apply_status(db: sqlite_utils.Database, msg: dict[str, Any], ingested_ts: float,
                 retained: bool = False, late_s: float = 0.0) -> float | None:
    """Record a validated ``status`` message as the box's current state (latest arrival wins).

    Args:
        db: The open database.
        msg: A message accepted by ``wire.validate("status", ...)``.
        ingested_ts: Wall-clock time of reception, in seconds since the epoch.
        retained: The broker delivered it as the topic's retained message (on a (re)subscription:
            the dashboard's start or reconnection), not as the box sent it: see
            :func:`status_seen_ts`.
        late_s: How long the status waited in the broker (the dashboard's session queue, while
            it was away) before it arrived: it was sent that long before ``ingested_ts``.

    Returns:
        The box's last-seen time it gave, None for a retained copy of what is stored (nothing
        written).
    """
    with db.conn:
        return _status_row(db, msg, ingested_ts, retained, late_s)


def status_seen_ts(db: sqlite_utils.Database, msg: dict[str, Any], ingested_ts: float,
                   retained: bool, late_s: float = 0.0) -> float | None:
    """When a status says its box was last seen: its reception (less ``late_s``, the time it
    waited in the broker), unless the broker delivered it retained; then None if it says nothing
    newer than the stored row (same state and restart, not newer by the box's clock), else the
    box's own ``ts`` bounded by the reception, never earlier than the stored last-seen time (a
    Last Will's ``ts`` is when its box connected)."""
    if not retained:
        return ingested_ts - late_s
    row = db.conn.execute("SELECT state, restart, last_status_ts, last_seen_ts FROM boxes "
                          "WHERE box = ?", (msg["box"],)).fetchone()
    if row is None or row[3] is None:
        return min(float(msg["ts"]), ingested_ts)
    state, restart, status_ts, seen_ts = row
    if (state, restart) == (msg["state"], msg.get("restart")) and \
            float(msg["ts"]) <= float(status_ts or 0.0):
        return None
    return max(float(seen_ts), min(float(msg["ts"]), ingested_ts))


def _status_row(db: sqlite_utils.Database, msg: dict[str, Any], ingested_ts: float,
                retained: bool = False, late_s: float = 0.0) -> float | None:
    """Apply one status to the box's row (caller's transaction); note a rise in overruns. Return
    the box's last-seen time it gave, None when nothing was written (:func:`status_seen_ts`)."""
    seen_ts = status_seen_ts(db, msg, ingested_ts, retained, late_s)
    if seen_ts is None:
        return None
    fields = {k: msg[k] for k in STATUS_FIELDS if k in msg}
    fields["restart"] = msg.get("restart")  # only the stop of a planned restart says it
    if "clock_synced" in msg or "clock_offset_ms" in msg:
        # the clock's state says whose clock it is: the server's only if it says so (a demo box)
        fields["clock_shared"] = bool(msg.get("clock_shared", False))
    _touch_box(db, msg["site"], msg["box"], seen_ts)
    # a Last Will carries the time its box connected (it is set then), maybe days ago: it must
    # not move the time of the box's last report back (the certificate's days left age from it)
    sets = ", ".join(["state = ?", "last_status_ts = max(coalesce(last_status_ts, 0), ?)",
                      *(f"{k} = ?" for k in fields)])
    args: list[Any] = [msg["state"], float(msg["ts"]), *fields.values()]
    if "overruns" in fields:  # SET expressions read the old row: compare before it changes
        sets += ", overruns_rise_ts = CASE WHEN ? > coalesce(overruns, 0) THEN ? " \
                "ELSE overruns_rise_ts END"
        args += [fields["overruns"], seen_ts]
    db.conn.execute(f"UPDATE boxes SET {sets} WHERE box = ?", (*args, msg["box"]))
    return seen_ts


def store_batch(db: sqlite_utils.Database, items: list[tuple[str, dict[str, Any]]],
                ingested_ts: float, retained: Container[int] = (),
                late_s: Mapping[int, float] | None = None) -> list[float | None]:
    """Store validated messages in one transaction; per item, the box's last-seen time it gave
    (``ingested_ts`` for a new stream message), None for a duplicate or for a retained copy of
    the stored status (nothing written).

    Args:
        db: The open database.
        items: (kind, message) pairs, kinds ``metrics``, ``event`` or ``status``, in arrival
            order (a later status wins).
        ingested_ts: Wall-clock time of reception, in seconds since the epoch.
        retained: Indices in ``items`` of statuses the broker delivered retained
            (:func:`apply_status`).
        late_s: By index in ``items``, how long a status waited in the broker
            (:func:`apply_status`).
    """
    out: list[float | None] = []
    tops: dict[tuple[str, str], tuple[str, int]] = {}
    conn = db.conn
    with conn:
        for i, (kind, msg) in enumerate(items):
            if kind == "status":
                out.append(_status_row(db, msg, ingested_ts, i in retained,
                                       (late_s or {}).get(i, 0.0)))
                continue
            table, names = ("metrics", METRIC_FIELDS) if kind == "metrics" else \
                ("events", EVENT_FIELDS)
            row = {"box": msg["box"], "seq": msg["seq"], "ts": float(msg["ts"]),
                   "ingested_ts": ingested_ts}
            # only the fields present: absent ones are NULL anyway, and binding a hundred
            # NULLs per row is most of the insert's cost
            row.update({k: msg[k] for k in names if msg.get(k) is not None})
            new = _insert_or_ignore(db, table, row)
            out.append(ingested_ts if new else None)
            if new:
                key = (msg["box"], table)
                seq = max(int(msg["seq"]), tops.get(key, ("", 0))[1])
                tops[key] = (msg["site"], seq)
        for (box, table), (site, seq) in tops.items():
            _touch_box(db, site, box, ingested_ts)
            col = "last_metrics_seq" if table == "metrics" else "last_event_seq"
            conn.execute(f"UPDATE boxes SET {col} = max(coalesce({col}, 0), ?) WHERE box = ?",
                         (seq, box))
    return out


def load_seq_state(db: sqlite_utils.Database) -> dict[str, tuple[int, int, list[int], int]]:
    """Per box: (seq_contig, seq_lost, stream seqs stored above seq_contig in order, the last
    sequence number its status said the broker acknowledged)."""
    out: dict[str, tuple[int, int, list[int], int]] = {}
    for box, contig, lost, acked in db.conn.execute(
            "SELECT box, coalesce(seq_contig, 0), coalesce(seq_lost, 0), "
            "coalesce(seq_last, 0) - coalesce(outbox_depth, 0) FROM boxes").fetchall():
        above = [int(r[0]) for r in db.conn.execute(
            "SELECT seq FROM metrics WHERE box = ? AND seq > ? UNION "
            "SELECT seq FROM events WHERE box = ? AND seq > ? ORDER BY 1",
            (box, contig, box, contig)).fetchall()]
        out[str(box)] = (int(contig), int(lost), above, int(acked))
    return out


def save_seq_state(db: sqlite_utils.Database, box: str, contig: int, lost: int) -> None:
    """Record a box's contiguous sequence watermark and lost count (caller's transaction)."""
    db.conn.execute("UPDATE boxes SET seq_contig = ?, seq_lost = ? WHERE box = ?",
                    (contig, lost, box))


def save_message_rates(db: sqlite_utils.Database, site: str, per_min: dict[str, int]) -> None:
    """Record each box's messages per minute (caller's transaction); the others' become 0."""
    db.conn.execute("UPDATE boxes SET msgs_per_min = 0 WHERE msgs_per_min > 0")
    for box, n in per_min.items():
        db.conn.execute(
            "INSERT INTO boxes (box, site, msgs_per_min) VALUES (?, ?, ?) "
            "ON CONFLICT(box) DO UPDATE SET msgs_per_min = excluded.msgs_per_min",
            (box, site, n))


def describe_payload(payload: bytes | bytearray) -> str:
    """What a refused payload was, never what it said: its length, a digest and, for a JSON
    object, its field names (a rogue box could otherwise leave audio in the quarantine)."""
    data = bytes(payload)
    out = f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}"
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError):
        return out + ", not JSON"
    if isinstance(msg, dict):
        names = ", ".join(sorted(str(k)[:40] for k in msg)[:30])
        return f"{out}, fields: {names}"[:QUARANTINE_PAYLOAD_MAX_CHARS]
    return f"{out}, a JSON {type(msg).__name__}"


def quarantine(db: sqlite_utils.Database, topic: str, reason: str, payload: bytes | bytearray,
               received_ts: float) -> None:
    """Keep a note of a refused message for inspection: why, and what it was (never its content:
    ``payload`` holds :func:`describe_payload`, ``truncated`` is 1 for every row)."""
    with db.conn:
        db.conn.execute(
            "INSERT INTO quarantine (received_ts, topic, reason, payload, truncated) "
            "VALUES (?, ?, ?, ?, ?)",
            (received_ts, topic[:256], reason[:256], describe_payload(payload), 1),
        )


_BOX_COLUMNS = ("b.box, b.site, b.state, b.last_status_ts, b.last_seen_ts, b.version, "
                "b.seq_last, b.outbox_depth, b.dropped, b.overruns, b.last_metrics_seq, "
                "b.capture_ok, b.private, b.restart")
_METRIC_COLUMNS = ", ".join(f"m.{c}" for c in ("seq", "ts", "ingested_ts", *METRIC_FIELDS))


def _box_row(row: sqlite3.Row | tuple[Any, ...], names: list[str]) -> dict[str, Any]:
    d = dict(zip(names, row, strict=True))
    metrics = None
    if d.get("m_seq") is not None:
        metrics = {k[2:]: d[k] for k in names if k.startswith("m_")}
        for flag in METRIC_FLAGS:
            if metrics.get(flag) is not None:
                metrics[flag] = bool(metrics[flag])
    box = {k: v for k, v in d.items() if not k.startswith("m_")}
    for flag in ("capture_ok", "private"):
        if box.get(flag) is not None:  # None: the box never said
            box[flag] = bool(box[flag])
    box["metrics"] = metrics
    return box


def boxes_with_latest(db: sqlite_utils.Database, box: str | None = None) -> list[dict[str, Any]]:
    """Every box (or one) with its state and latest metrics row (``metrics`` None if none)."""
    sql = (f"SELECT {_BOX_COLUMNS}, "
           + ", ".join(f"{c} AS m_{c.split('.')[1]}" for c in _METRIC_COLUMNS.split(", "))
           + " FROM boxes b LEFT JOIN metrics m ON m.box = b.box AND m.seq = b.last_metrics_seq")
    args: tuple[Any, ...] = ()
    if box is not None:
        sql += " WHERE b.box = ?"
        args = (box,)
    sql += " ORDER BY b.box"
    cur = db.conn.execute(sql, args)
    names = [c[0] for c in cur.description]
    return [_box_row(r, names) for r in cur.fetchall()]


def metrics_since(db: sqlite_utils.Database, box: str, since_seq: int = 0,
                  limit: int = 1000, agents: list[str] | None = None) -> list[dict[str, Any]]:
    """Metrics rows of ``box`` with ``seq > since_seq``, oldest first, at most ``limit``; with
    ``agents``, only rows from while one of them sat at the box (a seat changes hands)."""
    if agents is None:
        rows = db.query("SELECT * FROM metrics WHERE box = ? AND seq > ? ORDER BY seq LIMIT ?",
                        [box, since_seq, limit])
    elif not agents:
        return []
    else:
        marks = ",".join("?" for _ in agents)
        rows = db.query(
            "SELECT m.* FROM metrics m WHERE m.box = ? AND m.seq > ? AND EXISTS (SELECT 1 FROM "
            "seat_history h WHERE h.box = m.box AND m.ts >= h.from_ts AND (h.to_ts IS NULL OR "
            f"m.ts < h.to_ts) AND h.agent IN ({marks})) ORDER BY m.seq LIMIT ?",
            [box, since_seq, *agents, limit])
    out = []
    for r in rows:
        for flag in METRIC_FLAGS:
            if r.get(flag) is not None:
                r[flag] = bool(r[flag])
        out.append(r)
    return out


HELD_TALK_STATE_SQL = "CASE WHEN m.on_hold = 1 THEN 'hold' ELSE m.talk_state END"
"""A metrics row ``m``'s state on the seat's timeline: its talk state, ``hold`` while on hold."""


def recent_talk_states(db: sqlite_utils.Database, box: str, limit: int = 30) -> list[str]:
    """The last ``limit`` talk states of ``box``, oldest first (for the seat's timeline), ``hold``
    for a second whose call was on hold (the talk then is not the call's)."""
    rows = db.conn.execute(
        f"SELECT {HELD_TALK_STATE_SQL} FROM metrics m WHERE m.box = ? ORDER BY m.seq DESC LIMIT ?",
        (box, limit)).fetchall()
    return [r[0] for r in reversed(rows)]

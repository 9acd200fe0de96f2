"""Store-and-forward outbox in SQLite: a message is written before it is sent, and marked sent
only when the broker acknowledged it. Rows hold metric and event JSON only, never audio.

Sequence numbers are assigned here, per box, increasing by one, and survive restarts. A box with
no numbers on record (new, or its state directory wiped: a re-imaged card) starts from the clock in
milliseconds (:func:`clock_origin`), above every number it can have used before once NTP has set
the clock (:func:`await_clock`: a Pi boots at a stale time), and says where it started
(:attr:`Outbox.origin`, published as ``seq_origin``): the dashboard stores its first message as a
new one, not as a duplicate of the old first, and knows the numbers below were never used.

Acknowledged rows stay for ``retention_s`` (default 24 h) so that the dashboard can ask for a
resend (:meth:`Outbox.resend`); :meth:`Outbox.purge` deletes them afterwards.

Overflow policy (the outbox is bounded in bytes, ``max_bytes``, and in rows, ``max_messages``):
when a new message takes the outbox past a bound, the oldest *acknowledged* rows are deleted
first (they only serve resends); if that is not enough, the oldest *unsent* rows are deleted and
each one is counted in ``dropped`` (persistent, published in the box status). The newest data is
always kept, and what is lost is always a prefix of the sequence, so the oldest sequence number
still held (:meth:`Outbox.first_seq`, published as ``seq_first``) tells the dashboard that
everything below it will never come. A row costs its payload plus :data:`ROW_OVERHEAD_BYTES`.

Durability: every write is synced before it returns (``synchronous=FULL``), so a message is on disk
before it is sent, and a power cut never hands its sequence number to another message (the
dashboard would take that one for a duplicate). A database file SQLite cannot read is moved aside
(``outbox.sqlite.corrupt-<time>``) and a new one started; sequence numbers are reserved ahead in a
small file beside it (:data:`SEQ_RESERVE`), so a new or replaced database starts above every
number already used, and says so in its ``seq_origin``: the numbers in between are never taken for
duplicates.
A full disk loses the message being stored (counted in ``dropped``) after acknowledged rows were
deleted to make room; the box goes on. Acknowledgements it cannot write are kept in memory (those
messages are not sent again) and written with the next one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from miroir import wire
from miroir.files import atomic_write

ROW_OVERHEAD_BYTES = 64
"""Bytes counted per row on top of its payload (SQLite record, index entry, timestamps)."""
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
"""Default byte bound: about 38 h of a box in calls (1.95 kB a second on a real two-party call),
so the 24 h of acknowledged rows kept for resends fit, with room for a backlog."""
WAL_LIMIT_BYTES = 4 * 1024 * 1024
"""The write-ahead log is truncated back to this size after each checkpoint."""
DELETE_BATCH_ROWS = 1_000
"""Acknowledged rows deleted (or put back for a resend) per transaction: the write-ahead log
each needs grows with it (a whole shift in one transaction needed an 85 MB log, more than a
nearly full card had)."""
CLOCK_STEP_S = 60.0
"""A wall clock that moved this much further than the monotonic clock was set, not drifting."""
SEQ_RESERVE = 1_000
"""Sequence numbers reserved at a time in ``outbox.seq`` (rewritten every that many messages)."""
SQLITE_FULL = 13
ORIGIN_FLOOR = 1_700_000_000_000
"""Least first number of a new box (the clock in November 2023, in milliseconds)."""
ORIGIN_JITTER = 2**32
"""A clock not set yet (a Pi has no real-time clock) starts above :data:`ORIGIN_FLOOR` by a random
offset below this (50 days of milliseconds): two such starts of one box almost never meet."""

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_ts REAL NOT NULL,
    acked_ts REAL,
    given_up INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_unacked ON outbox(seq) WHERE acked_ts IS NULL;
CREATE INDEX IF NOT EXISTS outbox_acked ON outbox(seq) WHERE acked_ts IS NOT NULL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def clock_origin(now_s: float | None = None) -> int:
    """First sequence number of a box with no numbers on record: the clock in milliseconds.

    A box sends a few messages a second, far fewer than a thousand, so a box that lost its state
    and starts again later numbers above every message it sent before.

    Args:
        now_s: Wall-clock time in seconds since the epoch; now by default.

    Returns:
        The first sequence number.
    """
    ms = int((time.time() if now_s is None else now_s) * 1000)
    if ms >= ORIGIN_FLOOR + ORIGIN_JITTER:
        return ms
    return ORIGIN_FLOOR + secrets.randbelow(ORIGIN_JITTER)


def reserve_file(path: Path) -> Path:
    """The file beside the outbox ``path`` where its sequence numbers are reserved ahead."""
    return path.with_suffix(".seq")


def numbers_used(path: Path) -> tuple[int, int]:
    """First and last sequence number an outbox file has used, read without opening it as an
    :class:`Outbox` (another process may hold it); ``last < first`` when it numbered nothing.

    Args:
        path: the outbox file; a missing file has used nothing.

    Returns:
        (first, last).
    """
    if not path.exists():
        return 1, 0
    with sqlite3.connect(path, timeout=10) as db:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    first = int(meta.get("seq_origin", 1))
    return first, int(meta.get("last_seq", first - 1))


def await_clock(path: Path, wait_s: float, *, behind: bool = False,
                synced: Callable[[], bool] | None = None,
                sleep: Callable[[float], None] = time.sleep, poll_s: float = 1.0) -> bool:
    """Before a box with no numbers on record starts numbering from its clock, or on a clock
    known to be stale, wait for NTP.

    A Pi has no real-time clock and boots at a stale time (the image's), which can lie before
    numbers the box used in an earlier life, or before the agent's baselines were learned (they
    would be refused as learned in the future, and learned afresh): wait up to ``wait_s`` for the
    kernel to report the clock synchronized (``edge.health.clock_facts``).

    Args:
        path: the outbox file (its reserve file beside it also counts as numbers on record).
        wait_s: longest wait, seconds; 0 does not wait.
        behind: the clock reads before something the box wrote in an earlier life (its
            baselines' learned time): wait even with an outbox on record.
        synced: whether the clock is synchronized (the kernel's NTP state by default).
        sleep: how to wait ``poll_s`` seconds between checks.
        poll_s: seconds between checks.

    Returns:
        False when the box waited (a new outbox, or ``behind``) and the clock is still
        unsynchronized after ``wait_s``.
    """
    new = not (path.exists() or reserve_file(path).exists())
    # an outbox that exists keeps its origin (see Outbox), even if it numbered nothing
    if wait_s <= 0 or not (new or behind):
        return True
    check = synced or _ntp_synced
    if check():
        return True
    why = "new outbox" if new else "the clock reads before the agent's baselines were learned"
    log.info("%s: waiting up to %.0f s for NTP", why, wait_s)
    for _ in range(math.ceil(wait_s / poll_s)):
        sleep(poll_s)
        if check():
            return True
    if new:
        log.warning("the clock is still not synchronized after %.0f s: numbering from it anyway "
                    "(a stale clock can number below this box's earlier life, see docs/wire.md)",
                    wait_s)
    else:
        log.warning("the clock is still not synchronized after %.0f s: the agent's baselines "
                    "will be learned afresh", wait_s)
    return False


def _ntp_synced() -> bool:
    from edge.health import clock_facts

    return bool(clock_facts().get("clock_synced", False))  # {} where adjtimex is unavailable


class Outbox:
    """The box's durable queue of outgoing stream messages.

    Args:
        path: the SQLite file (in the box's state directory), or ``":memory:"`` (simulated boxes).
        site: site id put in every message.
        box: box id put in every message.
        max_messages: bound on rows kept, sent or not.
        max_bytes: bound on bytes kept (payloads plus :data:`ROW_OVERHEAD_BYTES` per row).
        retention_s: how long acknowledged rows are kept for resend requests, in seconds.

    Attributes:
        origin: first sequence number of this numbering (published as ``seq_origin``).
        last_seq: last sequence number stored (``origin - 1`` before the first message).
    """

    def __init__(self, path: Path | str, site: str, box: str, *, max_messages: int = 1_000_000,
                 max_bytes: int = DEFAULT_MAX_BYTES, retention_s: float = 24 * 3600) -> None:
        self.site = wire.check_id(site, "site")
        self.box = wire.check_id(box, "box")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.retention_s = retention_s
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock_offset_s = time.time() - time.monotonic()
        """Wall clock minus monotonic clock when last looked at (a jump shows as a change)."""
        self._acked_unwritten: dict[int, float] = {}
        """Acknowledged rows whose acknowledgement the disk refused (full), with its time: never
        sent again, written with the next acknowledgement."""
        # beside the database, not named after it: whoever deletes "outbox.sqlite*" keeps it
        self._seq_file = None if str(path) == ":memory:" else reserve_file(self.path)
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:  # not a database, or a damaged one: keep it aside
            aside = f"{self.path.name}.corrupt-{int(time.time())}"
            log.error("outbox %s unreadable (%s): moved to %s, starting a new one", self.path, exc,
                      aside)
            for suffix in ("", "-wal", "-shm"):
                part = self.path.with_name(self.path.name + suffix)
                if part.exists():
                    part.rename(self.path.with_name(aside + suffix))
            self._db = self._connect()
        stored = self._db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        self._reserved = self._read_reserve()
        if stored:
            self.last_seq = int(stored[0])
            self.origin = self._meta("seq_origin") or 1  # an outbox older than the origin: from 1
        else:
            # a database that lost its numbers (replaced) starts above those reserved; a box with
            # none reserved either (new, or its state wiped) starts from the clock; never below the
            # origin of a start that numbered nothing (its status may have announced it)
            fresh = self._reserved + 1 if self._reserved else clock_origin()
            self.origin = max(fresh, self._meta("seq_origin"))
            self.last_seq = self.origin - 1
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('seq_origin', ?)", (self.origin,))
        self.dropped = self._meta("dropped")
        rows, size = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        self._rows = int(rows)
        self._bytes = int(size) + ROW_OVERHEAD_BYTES * self._rows

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            db.executescript(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
            if "given_up" not in columns:  # an outbox made before the column
                db.execute("ALTER TABLE outbox ADD COLUMN given_up INTEGER NOT NULL DEFAULT 0")
            # every page, tables and indexes: a damage only a later read would hit (the numbers,
            # the unsent index) would stop the box at each start instead of being set aside
            problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError(f"quick_check: {'; '.join(problems)}")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _read_reserve(self) -> int:
        if self._seq_file is None:
            return 0
        try:
            return max(0, int(self._seq_file.read_text().strip() or 0))
        except (OSError, ValueError):
            return 0

    def _reserve(self, seq: int) -> None:
        """Make sure ``seq`` is below the reserved ceiling (a synced file, replaced atomically)."""
        if self._seq_file is None or seq <= self._reserved:
            return
        ceiling = seq + SEQ_RESERVE
        try:
            atomic_write(self._seq_file, f"{ceiling}\n")
        except OSError as exc:  # the message matters more: tried again at the next one
            log.warning("cannot reserve sequence numbers in %s: %s", self._seq_file, exc)
            return
        self._reserved = ceiling

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def put(self, kind: str, body: dict[str, Any], ts: float | None = None) -> tuple[int, bytes]:
        """Stamp a message with the header and the next sequence number and store it.

        Args:
            kind: ``metrics`` or ``event``.
            body: The allow-listed fields (without the header).
            ts: Timestamp in seconds since the epoch; now by default.

        Returns:
            The sequence number and the encoded payload.
        """
        seq = self.last_seq + 1
        msg = {"v": wire.SCHEMA_VERSION, "site": self.site, "box": self.box,
               "ts": round(time.time() if ts is None else ts, 3), "seq": seq, **body}
        payload = wire.encode(kind, msg)
        self._reserve(seq)
        try:
            self._insert(seq, kind, payload, msg["ts"])
        except sqlite3.Error as exc:
            full = getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL
            try:  # a full disk: what only serves resends goes first, then one more try
                if not (full and self._free_acked()):
                    raise
                self._insert(seq, kind, payload, msg["ts"])
            except sqlite3.Error:
                self.dropped += 1
                log.error("outbox: message %d (%s) lost, counted in dropped: %s", seq, kind, exc)
                raise
        self.last_seq = seq
        return seq, payload

    def _insert(self, seq: int, kind: str, payload: bytes, ts: float) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("INSERT INTO outbox(seq, kind, payload, created_ts) VALUES (?,?,?,?)",
                             (seq, kind, payload, ts))
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('last_seq', ?)", (seq,))
            self._rows += 1
            self._bytes += len(payload) + ROW_OVERHEAD_BYTES
            self._bound()
            if self.dropped != self._meta("dropped"):  # one lost on a full disk: kept from now
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('dropped', ?)", (self.dropped,))
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # SQLite may have rolled back already (a full disk)
                self._db.execute("ROLLBACK")
            self._recount()
            raise

    def _free_acked(self) -> int:
        """Delete every acknowledged row (a full disk); return how many."""
        before = self._rows
        with contextlib.suppress(sqlite3.OperationalError):  # the batches deleted before stay so
            self._delete_acked()
        return before - self._rows

    def _delete_acked(self, before_ts: float = math.inf) -> int:
        """Delete the rows acknowledged before ``before_ts``, oldest first, one transaction per
        :data:`DELETE_BATCH_ROWS` (the log each needs fits a nearly full card); return how many."""
        n = 0
        try:
            while True:
                k = int(self._db.execute(
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE acked_ts IS NOT "
                    "NULL AND acked_ts < ? ORDER BY seq LIMIT ?)",
                    (before_ts, DELETE_BATCH_ROWS)).rowcount)
                n += k
                if k < DELETE_BATCH_ROWS:
                    return n
        finally:
            if n:
                self._recount()

    def _recount(self) -> None:
        rows, size = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        self._rows, self._bytes = int(rows), int(size) + ROW_OVERHEAD_BYTES * int(rows)

    def _over(self) -> bool:
        return self._rows > self.max_messages or self._bytes > self.max_bytes

    def _evict(self, acked: bool) -> int:
        """Delete oldest rows (acknowledged or not) until within bounds; return how many."""
        where = "acked_ts IS NOT NULL" if acked else "1"
        n = 0
        while self._over():
            rows = self._db.execute(
                f"SELECT seq, LENGTH(payload) FROM outbox WHERE {where} ORDER BY seq LIMIT 64"
            ).fetchall()
            if not rows:
                break
            for seq, size in rows:
                if not self._over():
                    break
                self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
                self._rows -= 1
                self._bytes -= int(size) + ROW_OVERHEAD_BYTES
                n += 1
        return n

    def _bound(self) -> None:
        """Apply the overflow policy inside the caller's transaction."""
        if not self._over():
            return
        self._evict(acked=True)
        lost = self._evict(acked=False)
        if lost:
            self.dropped += lost
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('dropped', ?)", (self.dropped,))

    def pending(self, after_seq: int = 0, limit: int = 100) -> list[tuple[int, str, bytes]]:
        """Unacknowledged messages after ``after_seq``, oldest first."""
        unwritten = self._acked_unwritten
        rows = self._db.execute(
            "SELECT seq, kind, payload FROM outbox WHERE acked_ts IS NULL AND seq > ? "
            "ORDER BY seq LIMIT ?", (after_seq, limit + len(unwritten))).fetchall()
        return [(int(s), str(k), bytes(p)) for s, k, p in rows if s not in unwritten][:limit]

    def ack(self, seqs: list[int], ts: float | None = None) -> None:
        """Mark messages as acknowledged by the broker.

        On a full disk the error is raised, and the acknowledgements are kept in memory: those
        messages are not sent again, and are written with the next acknowledgement.
        """
        if not seqs:
            return
        self._acked_unwritten.update(dict.fromkeys(seqs, time.time() if ts is None else ts))
        try:
            if ts is None:
                self._follow_clock()  # the rows acknowledged before a jump move before these come
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("UPDATE outbox SET acked_ts = ? WHERE seq = ?",
                                 [(t, s) for s, t in self._acked_unwritten.items()])
            self._db.execute("COMMIT")
        except sqlite3.Error:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._acked_unwritten.clear()

    def give_up(self, seqs: list[int], ts: float | None = None) -> None:
        """Stop sending messages the broker keeps refusing: count them in ``dropped``, once each;
        they stay for the retention window (a ``resend`` can try them again, and a message given
        up again is not counted again)."""
        if not seqs:
            return
        now = time.time() if ts is None else ts
        self._db.execute("BEGIN IMMEDIATE")
        n = self._db.executemany("UPDATE outbox SET acked_ts = ?, given_up = 1 WHERE seq = ? "
                                 "AND acked_ts IS NULL AND given_up = 0",
                                 [(now, s) for s in seqs]).rowcount
        self._db.executemany("UPDATE outbox SET acked_ts = ? WHERE seq = ? AND acked_ts IS NULL",
                             [(now, s) for s in seqs])
        self.dropped += max(0, n)
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('dropped', ?)", (self.dropped,))
        self._db.execute("COMMIT")

    def resend(self, from_seq: int, to_seq: int | None = None) -> int:
        """Mark acknowledged rows from ``from_seq`` to ``to_seq`` (inclusive) for sending again.

        Args:
            from_seq: First sequence number asked for.
            to_seq: Last one; the newest by default.

        Returns:
            How many rows will be sent again (rows purged or dropped cannot be).

        One transaction per :data:`DELETE_BATCH_ROWS` rows, oldest first: a day's rows in one
        would need a write-ahead log of their size (73 MB), more than a nearly full card has.
        """
        last = self.last_seq if to_seq is None else to_seq
        again = [s for s in self._acked_unwritten if from_seq <= s <= last]
        for s in again:  # acknowledged, not written yet: unsent again in memory
            del self._acked_unwritten[s]
        n = len(again)
        while True:
            k = int(self._db.execute(
                "UPDATE outbox SET acked_ts = NULL WHERE seq IN (SELECT seq FROM outbox WHERE seq "
                "BETWEEN ? AND ? AND acked_ts IS NOT NULL ORDER BY seq LIMIT ?)",
                (from_seq, last, DELETE_BATCH_ROWS)).rowcount)
            n += k
            if k < DELETE_BATCH_ROWS:
                return n

    def _follow_clock(self) -> None:
        """The wall clock jumped ahead (NTP setting a box that booted without a real-time clock):
        move the acknowledgement times recorded before by as much, so the jump does not age them
        (a clock set back only keeps rows longer)."""
        offset_s = time.time() - time.monotonic()
        step_s, self._clock_offset_s = offset_s - self._clock_offset_s, offset_s
        if step_s >= CLOCK_STEP_S:
            log.warning("outbox: the clock jumped %.0f s ahead; acknowledgement times follow", step_s)
            self._db.execute("UPDATE outbox SET acked_ts = acked_ts + ? WHERE acked_ts IS NOT NULL",
                             (step_s,))

    def purge(self, now: float | None = None) -> int:
        """Delete acknowledged rows older than the retention window; return how many."""
        if now is None:
            self._follow_clock()
        cutoff = (time.time() if now is None else now) - self.retention_s
        # counted from the acknowledgement, on a clock whose jumps the rows follow
        return self._delete_acked(cutoff)

    def first_seq(self) -> int:
        """Oldest sequence number still held (``last_seq + 1`` when empty)."""
        row = self._db.execute("SELECT MIN(seq) FROM outbox").fetchone()
        return int(row[0]) if row[0] is not None else self.last_seq + 1

    def depth(self) -> int:
        """Messages not yet acknowledged."""
        n = int(self._db.execute("SELECT COUNT(*) FROM outbox WHERE acked_ts IS NULL").fetchone()[0])
        return max(0, n - len(self._acked_unwritten))

    def depth_total(self) -> int:
        """Rows kept, acknowledged or not."""
        return self._rows

    def size_bytes(self) -> int:
        """Bytes counted against ``max_bytes``."""
        return self._bytes

    def disk_bytes(self) -> int:
        """Bytes the database takes on disk (main file, WAL and shared memory)."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            p = self.path.with_name(self.path.name + suffix)
            if p.exists():
                total += p.stat().st_size
        return total

    def close(self) -> None:
        """Close the database."""
        self._db.close()

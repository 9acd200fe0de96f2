"""Store-and-forward outbox in SQLite: a message is written before it is sent, and marked sent
only when the broker acknowledged it. Rows hold metric and event JSON only, never audio.

Sequence numbers are assigned here, per box, increasing by one, and survive restarts.
Overflow policy: past ``max_messages`` rows, the oldest acknowledged rows go first, then the oldest
unsent ones; each unsent row dropped is counted in ``dropped`` (published in the box status).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from miroir import wire

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_ts REAL NOT NULL,
    acked_ts REAL
);
CREATE INDEX IF NOT EXISTS outbox_unacked ON outbox(seq) WHERE acked_ts IS NULL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Outbox:
    """The box's durable queue of outgoing stream messages.

    Args:
        path: the SQLite file (in the box's state directory).
        site: site id put in every message.
        box: box id put in every message.
        max_messages: bound on rows kept, sent or not.
        retention_s: how long acknowledged rows are kept for resend requests.
    """

    def __init__(self, path: Path, site: str, box: str, *, max_messages: int = 200_000,
                 retention_s: float = 24 * 3600) -> None:
        self.site = site
        self.box = box
        self.max_messages = max_messages
        self.retention_s = retention_s
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self.last_seq = self._meta("last_seq")
        self.dropped = self._meta("dropped")

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def put(self, kind: str, body: dict[str, Any], ts: float | None = None) -> tuple[int, bytes]:
        """Stamp a message with the header and the next sequence number and store it.

        Returns:
            The sequence number and the encoded payload.
        """
        seq = self.last_seq + 1
        msg = {"v": wire.SCHEMA_VERSION, "site": self.site, "box": self.box,
               "ts": round(time.time() if ts is None else ts, 3), "seq": seq, **body}
        payload = wire.encode(kind, msg)
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("INSERT INTO outbox(seq, kind, payload, created_ts) VALUES (?,?,?,?)",
                         (seq, kind, payload, msg["ts"]))
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('last_seq', ?)", (seq,))
        self._db.execute("COMMIT")
        self.last_seq = seq
        self._bound()
        return seq, payload

    def _bound(self) -> None:
        excess = self.depth_total() - self.max_messages
        if excess <= 0:
            return
        self._db.execute("BEGIN IMMEDIATE")
        acked = self._db.execute(
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE acked_ts IS NOT NULL "
            "ORDER BY seq LIMIT ?)", (excess,)).rowcount
        lost = excess - acked
        if lost > 0:
            self._db.execute("DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox "
                             "ORDER BY seq LIMIT ?)", (lost,))
            self.dropped += lost
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('dropped', ?)", (self.dropped,))
        self._db.execute("COMMIT")

    def pending(self, after_seq: int = 0, limit: int = 100) -> list[tuple[int, str, bytes]]:
        """Unacknowledged messages after ``after_seq``, oldest first."""
        rows = self._db.execute(
            "SELECT seq, kind, payload FROM outbox WHERE acked_ts IS NULL AND seq > ? "
            "ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()
        return [(int(s), str(k), bytes(p)) for s, k, p in rows]

    def ack(self, seqs: list[int], ts: float | None = None) -> None:
        """Mark messages as acknowledged by the broker."""
        if not seqs:
            return
        now = time.time() if ts is None else ts
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany("UPDATE outbox SET acked_ts = ? WHERE seq = ?",
                             [(now, s) for s in seqs])
        self._db.execute("COMMIT")

    def purge(self, now: float | None = None) -> int:
        """Delete acknowledged rows older than the retention window; return how many."""
        cutoff = (time.time() if now is None else now) - self.retention_s
        return int(self._db.execute("DELETE FROM outbox WHERE acked_ts IS NOT NULL "
                                    "AND created_ts < ?", (cutoff,)).rowcount)

    def depth(self) -> int:
        """Messages not yet acknowledged."""
        return int(self._db.execute("SELECT COUNT(*) FROM outbox WHERE acked_ts IS NULL")
                   .fetchone()[0])

    def depth_total(self) -> int:
        """Rows kept, acknowledged or not."""
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        self._db.close()

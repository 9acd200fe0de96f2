"""MQTT subscriber that validates every message against the wire contract and stores it.

Nothing is lost end to end: the dashboard keeps a persistent session (clean start off, session
expiry :data:`SESSION_EXPIRY_S`) and acknowledges a message only once it is committed (the writer
thread sends the PUBACK after the commit; not at all if the connection it came on ended meanwhile,
since its packet id may name a new message by then). Messages lost anyway (a broker killed before
its autosave, a bridge restarted) show as holes in a box's sequence: every box's stream is tracked
(:class:`SeqTrack`), and a hole that lasts :data:`GAP_GRACE_S` triggers a ``resend`` command on
the box's ``cmd`` topic, repeated every :data:`RESEND_RETRY_S` while it lasts. A box's status
says which sequence numbers it no longer holds (``seq_first``): those are counted as lost and
no longer asked for. It also says where its numbering starts (``seq_origin``): a new box, or one
whose state was wiped, numbers from the clock, and the numbers between its earlier messages and
that origin were never used (neither lost nor asked for).

A seat that changed hands (``seats.changed_ts``, set by the inventory import) while its box
reports baselines learned before then (``status.baselines_ts``) gets a ``forget_baselines`` command
for that time, repeated every :data:`RESEND_RETRY_S` while the box is online and still says so:
the box's session is clean, so a box offline at the change hears of it when it is back.
"""

from __future__ import annotations

import logging
import math
import queue
import sqlite3
import ssl
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from typing import Any

from miroir import wire
from miroir.journal import Refusals

from . import certs, fleet, schema
from . import db as store
from .settings import DashboardSettings

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 86400
"""Broker keeps the dashboard's session (subscription and QoS 1 queue) this long while away."""
LAG_WINDOW = 10000
"""How many recent ingest lags are kept for percentiles."""

LATE_STATUS_S = 2
"""A status that waited this long in the broker or longer (its Message Expiry Interval less what
the broker says is left, :data:`miroir.wire.STATUS_EXPIRY_S`; whole seconds, so a status
delivered at once may read 1) arrived late: it is dated when it was sent, and counted."""

GAP_GRACE_S = 1.0
"""A hole in a box's sequence must last this long before a resend is asked (seconds)."""
RESEND_RETRY_S = 5.0
"""A resend request is repeated this often while the hole it asked about lasts (seconds)."""
RECEIVE_MAXIMUM = 1000
"""QoS 1 messages the broker may have in flight to the ingest (acknowledged after commit)."""
BATCH_MAX = 2000
"""Most messages committed in one transaction (they are acknowledged after the commit)."""
STORE_RETRY_S = 1.0
"""While the database is busy or failing, the writer retries the same batch this often; the
broker holds the messages meanwhile (nothing is acknowledged before it is stored)."""
GAP_CHECK_EVERY_S = 0.5
"""Period of the gap checker thread, in seconds."""
RATE_WINDOW_S = 60.0
"""Each box's messages are counted over windows this long; the last full one is kept in the
box's row as messages per minute (``msgs_per_min``), which the IT page shows: one box flooding
the broker delays every other box's messages, and nothing else names it."""
MAX_FUTURE_S = 86400.0
"""A message whose ``ts`` is further ahead of the dashboard's clock than this is refused: the
retention purge goes by ``ts``, so it would be kept for ever (and the lag figures read
negative); the pages read an agent's rows up to a day ahead."""

Notify = Callable[[dict[str, Any]], None]


@dataclass
class SeqTrack:
    """One box's sequence bookkeeping: what is stored, what is missing, what was asked."""

    contig: int = 0
    """Every seq up to this one is stored (or known lost)."""
    lost: int = 0
    """Seqs the box no longer holds and that never arrived."""
    ahead: set[int] = field(default_factory=set)
    """Stored seqs above ``contig`` (there is a hole below each)."""
    last_known: int = 0
    """Highest seq the box is known to have (from messages and ``status.seq_last``)."""
    acked: int = 0
    """Highest seq the box's statuses said the broker acknowledged."""
    gap_since: float | None = None
    asked_from: int = 0
    asked_ts: float = 0.0
    dirty: bool = False

    def mark(self, seq: int) -> None:
        """Record that ``seq`` is stored."""
        self.last_known = max(self.last_known, seq)
        if seq <= self.contig:
            return
        if seq != self.contig + 1:
            self.ahead.add(seq)
            return
        self.contig = seq
        while self.contig + 1 in self.ahead:
            self.ahead.discard(self.contig + 1)
            self.contig += 1
        self.dirty = True

    def forget_below(self, first: int) -> int:
        """The box holds nothing below ``first``: count what is missing there as lost."""
        return self._skip_to(first, lost_up_to=first - 1)

    def restart(self, origin: int) -> int:
        """The box numbers from ``origin`` on (a new or wiped outbox): the numbers between its
        earlier messages and ``origin`` were never used. Count the earlier ones missing as lost.

        The earlier numbering ran up to the highest of its numbers known here: the watermark,
        a stored seq below ``origin``, the broker's acknowledgement if below ``origin``. Say 1 to 12
        are stored (``contig`` 12), and 15 and 17; the last status said 20 acknowledged; the box
        is wiped and numbers from 5000, of which 5000 and 5001 are stored already. The old
        numbering ran to 20: 13, 14, 16, 18, 19 and 20 are lost (6 returned), 21 to 4999 were
        never used, and the watermark moves to 5001 (``ahead`` is empty again).
        """
        below = [s for s in (*self.ahead, self.acked) if s < origin]
        return self._skip_to(origin, lost_up_to=max([self.contig, *below]))

    def _skip_to(self, first: int, lost_up_to: int) -> int:
        """Move the watermark to ``first - 1``; return the seqs up to ``lost_up_to`` never stored
        (counted as lost)."""
        if first - 1 <= self.contig:
            return 0
        below = {s for s in self.ahead if s < first}
        missing = lost_up_to - self.contig - sum(1 for s in below if s <= lost_up_to)
        self.ahead -= below
        self.lost += missing
        self.contig = first - 1
        while self.contig + 1 in self.ahead:  # absorb what follows
            self.ahead.discard(self.contig + 1)
            self.contig += 1
        self.dirty = True
        return missing

    def gap(self) -> tuple[int, int] | None:
        """The first hole as (from_seq, to_seq), or None."""
        if self.contig >= self.last_known:
            return None
        end = min(self.ahead) - 1 if self.ahead else self.last_known
        return self.contig + 1, end


def client_id_for(site: str) -> str:
    """MQTT client id of a site's dashboard (stable, so the broker resumes its session)."""
    return f"dash-{wire.check_id(site, 'site')}"


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` (0..100) of ``values``, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100.0 * len(ordered))))
    return ordered[rank - 1]


class StoreUnavailable(RuntimeError):
    """The dashboard's database cannot take writes now (busy, I/O error, full disk)."""

    def __init__(self, reason: str, valid: list[int]) -> None:
        super().__init__(reason)
        self.valid = valid


def status_late_s(topic: str, retained: bool, properties: Any) -> float:
    """How long a box's status delivered live waited in the broker (the dashboard's session
    queue, while it was away): its Message Expiry Interval less what the broker says is left,
    0 below :data:`LATE_STATUS_S`, for another message, a retained copy (dated by its ``ts``) or
    a status of a box that sets no expiry."""
    left = getattr(properties, "MessageExpiryInterval", None)
    if retained or left is None or not topic.endswith("/status"):
        return 0.0
    waited = wire.STATUS_EXPIRY_S - int(left)
    return float(waited) if waited >= LATE_STATUS_S else 0.0


def _cleared_status(topic: str, payload: bytes) -> bool:
    """True for an empty message on a box's status topic: its retained status removed from the
    broker (``miroir provision revoke`` does it), nothing to store and nothing wrong."""
    return not payload and topic.endswith("/status")


def _unavailable(exc: sqlite3.OperationalError) -> bool:
    """True for a database that is busy or failing, not for a statement that is wrong."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_FULL",
                            "SQLITE_CANTOPEN", "SQLITE_READONLY"))


class Ingest:
    """Subscribe to a site's boxes, store valid messages, quarantine the rest, notify listeners."""

    def __init__(self, settings: DashboardSettings, notify: Notify | None = None,
                 *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.site = wire.check_id(settings.site, "site")
        self.notify = notify
        self._clock = clock
        self._lock = threading.Lock()
        self._db = store.open_db(settings.db_path)
        schema.ensure_schema(self._db)
        self._client: Any = None
        self.connected = threading.Event()
        self.broker_cert_not_after_ts: float | None = None
        """End of the broker's certificate, as it showed it at the last connection."""
        self.received = 0
        self.inserted = 0
        self.duplicates = 0
        self.quarantined = 0
        self.store_retries = 0
        """Batches the writer had to retry because the database was busy or failing."""
        self.notify_errors = 0
        self.connects = 0
        self.resend_requests = 0
        self.lost = 0
        self.retired_refused = 0
        """Messages refused because their box was retired (``miroir dashboard retire``)."""
        self.late_statuses = 0
        """Statuses that waited :data:`LATE_STATUS_S` or longer in the broker (dated when sent)."""
        self._late_lines = Refusals("late status", "delivered", log, plural="late statuses",
                                    counter="late_statuses", level=logging.INFO)
        """The log's account of them: after a restart every box's comes at once."""
        self._lags_ms: deque[float] = deque(maxlen=LAG_WINDOW)
        self._boxes_seen: set[str] = set()
        self._retired_logged: set[str] = set()
        self._db_lock = threading.Lock()
        self._tracks: dict[str, SeqTrack] = {}
        for box, (contig, lost, above, acked) in store.load_seq_state(self._db).items():
            track = SeqTrack(contig=contig, lost=lost, last_known=contig, acked=acked)
            for seq in above:
                track.mark(seq)
            track.dirty = track.contig != contig
            self._tracks[box] = track
        self.requests: deque[tuple[str, int, int]] = deque(maxlen=1000)
        """Recent resend requests (box, from_seq, to_seq), newest last."""
        self.forget_requests = 0
        """``forget_baselines`` commands sent (a seat changed hands)."""
        self._forget_asked: dict[str, float] = {}
        self._stop_checker = threading.Event()
        self._checker: threading.Thread | None = None
        self._queue: queue.Queue[tuple[Any, int, str, bytes, int, int, bool, float]] = (
            queue.Queue())
        self._connection = 0
        """Connection to the broker messages are received on. A message of an earlier one is not
        acknowledged: the broker may have lost the session (restarted without its state, expired)
        or taken it back from an older save (killed between two), and numbers packets from where
        that left off, so its id may name a new message by then. The broker sends the unanswered
        ones of a session it kept again (stored once: the insert is idempotent)."""
        self.stale_acks = 0
        """Messages committed after the connection they came on ended: not acknowledged."""
        self._box_counts: Counter[str] = Counter()
        self._window_start = time.monotonic()
        self._stop_writer = threading.Event()
        self._writer: threading.Thread | None = None

    # ----------------------------------------------------------------- message handling
    def handle(self, topic: str, payload: bytes, retained: bool = False,
               late_s: float = 0.0) -> str:
        """Process one message; return its outcome (inserted, duplicate, status, unchanged: a
        retained status the broker delivered again, already stored, cleared: a retained status
        removed, quarantined).

        ``retained``: the broker delivered it as its topic's retained message (paho's
        ``message.retain``: on a subscription, the dashboard's start or reconnection; a message
        the box publishes while the dashboard is subscribed is not flagged): not news, see
        :func:`dashboard.db.apply_status`. ``late_s``: how long a status waited in the broker
        (:func:`status_late_s`): it is dated when it was sent.

        Never raises: anything unexpected ends in the quarantine table.
        """
        now = self._clock()
        with self._lock:
            self.received += 1
        if _cleared_status(topic, payload):
            return "cleared"
        try:
            outcome, update = self._store(topic, payload, now, retained, late_s)
        except wire.WireError as exc:
            return self._quarantine(topic, str(exc), payload, now)
        except Exception as exc:  # a bug or a db error must not kill paho's thread
            log.exception("ingest failed on %s", topic)
            return self._quarantine(topic, f"internal error: {type(exc).__name__}: {exc}",
                                    payload, now)
        if update is not None:
            self._notify(update)
        return outcome

    def handle_batch(self, items: list[tuple[str, bytes]], retained: Container[int] = (),
                     late_s: Mapping[int, float] | None = None) -> list[str]:
        """Process messages in one database transaction; return each one's outcome.

        Invalid messages are quarantined; if the transaction fails on one message, each is retried
        alone through :meth:`handle`. ``retained``: the indices in ``items`` of messages the
        broker delivered retained (:meth:`handle`); ``late_s``: by index in ``items``, how long a
        status waited in the broker (:meth:`handle`).

        Raises:
            StoreUnavailable: the database is busy (another writer held it past the busy timeout)
                or failing (I/O, full disk): the messages to try again (its ``valid``: their
                indices in ``items``) were not stored: valid ones, and refused ones whose
                quarantine row could not be written.
        """
        now = self._clock()
        late = {i: s for i, s in (late_s or {}).items() if s > 0}
        outcomes: list[str] = [""] * len(items)
        valid: list[tuple[int, wire.Topic, dict[str, Any]]] = []
        held: list[int] = []  # refused, their quarantine row not written: they wait as well
        for i, (topic, payload) in enumerate(items):
            if _cleared_status(topic, payload):
                with self._lock:
                    self.received += 1
                outcomes[i] = "cleared"
                continue
            try:
                t, msg = self._parse(topic, payload, now)
                valid.append((i, t, msg))
            except wire.WireError as exc:
                try:
                    outcomes[i] = self._quarantine(topic, str(exc), payload, now, hold_busy=True)
                except sqlite3.OperationalError:
                    held.append(i)
                    continue
                with self._lock:
                    self.received += 1
        try:
            with self._db_lock:
                valid = self._drop_retired(valid, outcomes)
                fresh = store.store_batch(self._db, [(t.kind, m) for _, t, m in valid], now,
                                          {j for j, (i, _, _) in enumerate(valid)
                                           if i in retained} if retained else (),
                                          {j: late[i] for j, (i, _, _) in enumerate(valid)
                                           if i in late})
        except sqlite3.OperationalError as exc:
            if _unavailable(exc):
                raise StoreUnavailable(str(exc), sorted(held + [i for i, _, _ in valid])) from exc
            log.exception("batch store failed; storing one by one")
            for i, _t, _ in valid:
                outcomes[i] = self.handle(*items[i], retained=i in retained,
                                          late_s=late.get(i, 0.0))
            return outcomes
        except Exception:
            log.exception("batch store failed; storing one by one")
            for i, _t, _ in valid:
                outcomes[i] = self.handle(*items[i], retained=i in retained,
                                          late_s=late.get(i, 0.0))
            return outcomes
        updates = []
        with self._lock:
            self.received += len(valid)
            for (i, t, msg), seen_ts in zip(valid, fresh, strict=True):
                self._boxes_seen.add(t.box)
                if t.kind == "status":
                    self._track_status(t.box, msg)  # what a restarted ingest knows of its seqs
                    if seen_ts is None:  # a retained copy of what is stored: not news
                        outcomes[i] = "unchanged"
                        continue
                    outcomes[i] = "status"
                    if i in late:
                        self._late(t.box, late[i])
                else:
                    self._tracks.setdefault(t.box, SeqTrack()).mark(int(msg["seq"]))
                    if seen_ts is None:
                        self.duplicates += 1
                        outcomes[i] = "duplicate"
                        continue
                    self.inserted += 1
                    self._lags_ms.append((now - float(msg["ts"])) * 1000.0)
                    outcomes[i] = "inserted"
                updates.append(self._update(t.kind, msg, seen_ts))
        for update in updates:
            self._notify(update)
        if held:
            raise StoreUnavailable("database busy: quarantine rows not written", held)
        return outcomes

    def _drop_retired(self, valid: list[tuple[int, wire.Topic, dict[str, Any]]],
                      outcomes: list[str]) -> list[tuple[int, wire.Topic, dict[str, Any]]]:
        """The messages of ``valid`` whose box is not retired; the others are refused and
        counted (outcome ``retired``). The caller holds the database lock."""
        retired = schema.retired_boxes(self._db)
        kept = []
        for i, t, msg in valid:
            if t.box in retired:
                outcomes[i] = self._refuse_retired(t.box, counted=False)
            else:
                kept.append((i, t, msg))
        return kept

    def _refuse_retired(self, box: str, counted: bool) -> str:
        """Count one message of a retired box, refused (logged once per box), and as received
        unless ``counted`` already; return its outcome."""
        with self._lock:
            if not counted:
                self.received += 1
            self.retired_refused += 1
            first = box not in self._retired_logged
            self._retired_logged.add(box)
            self._tracks.pop(box, None)
        if first:
            log.warning("box %s is retired: its messages are refused", box)
        return "retired"

    def _update(self, kind: str, msg: dict[str, Any], now: float) -> dict[str, Any]:
        """The live push of one message received at ``now`` (for a status, the box's last-seen
        time it gave: a retained one's may be earlier); a status's also says until when its
        box is shown restarting (``restarting_until_ts``, by the IT page's rule and grace:
        :func:`dashboard.fleet.restarting_until`), null unless it is the stop of a planned restart."""
        update: dict[str, Any] = {"kind": kind, **msg, "ingested_ts": now}
        if kind == "status":
            update["restarting_until_ts"] = fleet.restarting_until(
                {**msg, "last_seen_ts": now}, self.settings.restart_grace_s)
        return update

    def _notify(self, update: dict[str, Any]) -> None:
        """Pass one stored message to the live push; a failing listener is counted, never raised."""
        if self.notify is None:
            return
        try:
            self.notify(update)
        except Exception:
            log.exception("notify callback failed")
            with self._lock:
                self.notify_errors += 1

    def _parse(self, topic: str, payload: bytes,
               now: float) -> tuple[wire.Topic, dict[str, Any]]:
        t = wire.parse_topic(topic)
        if t.site != self.site:
            raise wire.WireError(f"topic site {t.site!r} is not this dashboard's {self.site!r}")
        msg = wire.decode(t.kind, bytes(payload))
        if msg["site"] != t.site or msg["box"] != t.box:
            raise wire.WireError(
                f"payload site/box {msg['site']}/{msg['box']} differ from topic {t.site}/{t.box}")
        if msg["ts"] > now + MAX_FUTURE_S:
            raise wire.WireError(f"{t.kind}.ts: {msg['ts']} is more than {MAX_FUTURE_S:.0f} s "
                                 "ahead of the dashboard's clock")
        return t, msg

    def _track_status(self, box: str, msg: dict[str, Any]) -> None:
        """Update a box's sequence bookkeeping from its status (caller holds the lock)."""
        track = self._tracks.setdefault(box, SeqTrack())
        if "seq_origin" in msg:  # before the acknowledged count, which is of the new numbering
            self.lost += track.restart(int(msg["seq_origin"]))
        # What the broker acknowledged to the box must come; the rest is still queued.
        acked = int(msg.get("seq_last", 0)) - int(msg.get("outbox_depth", 0))
        track.last_known = max(track.last_known, acked)
        track.acked = max(track.acked, acked)
        if "seq_first" in msg:
            self.lost += track.forget_below(int(msg["seq_first"]))

    def _late(self, box: str, late_s: float) -> None:
        """Count and log a status that waited ``late_s`` in the broker (caller holds the lock)."""
        self.late_statuses += 1
        self._late_lines.refused(f"{box} waited {late_s:.0f} s in the broker while the dashboard "
                                 "was away: dated when the box sent it")

    def _store(self, topic: str, payload: bytes, now: float, retained: bool = False,
               late_s: float = 0.0) -> tuple[str, dict[str, Any] | None]:
        t, msg = self._parse(topic, payload, now)
        with self._db_lock:
            retired = t.box in schema.retired_boxes(self._db)
        if retired:
            return self._refuse_retired(t.box, counted=True), None
        if t.kind == "status":
            with self._db_lock:
                seen_ts = store.apply_status(self._db, msg, now, retained, late_s)
            with self._lock:
                self._boxes_seen.add(t.box)
                self._track_status(t.box, msg)  # what a restarted ingest knows of its seqs
                if seen_ts is None:  # a retained copy of what is stored: not news
                    return "unchanged", None
                if late_s > 0:
                    self._late(t.box, late_s)
            return "status", self._update(t.kind, msg, seen_ts)
        update = self._update(t.kind, msg, now)
        insert = store.insert_metrics if t.kind == "metrics" else store.insert_event
        with self._db_lock:
            new = insert(self._db, msg, now)
        with self._lock:
            self._boxes_seen.add(t.box)
            self._tracks.setdefault(t.box, SeqTrack()).mark(int(msg["seq"]))
            if not new:
                self.duplicates += 1
                return "duplicate", None
            self.inserted += 1
            self._lags_ms.append((now - float(msg["ts"])) * 1000.0)
        return "inserted", update

    def _quarantine(self, topic: str, reason: str, payload: Any, now: float,
                    hold_busy: bool = False) -> str:
        """Keep a refused message in the quarantine table, counted and logged.

        Raises:
            sqlite3.OperationalError: with ``hold_busy``, when the database is busy or failing:
                nothing was counted, the message is to be tried again (a busy database acknowledged
                it with its quarantine row lost).
        """
        try:
            data = payload if isinstance(payload, bytes | bytearray) else repr(payload).encode()
            with self._db_lock:
                store.quarantine(self._db, str(topic), reason, data, now)
        except sqlite3.OperationalError as exc:
            if hold_busy and _unavailable(exc):
                raise
            log.exception("could not store a quarantined message")
        except Exception:
            log.exception("could not store a quarantined message")
        with self._lock:
            self.quarantined += 1
        log.warning("quarantined message on %r: %s", topic, reason)
        return "quarantined"

    # ------------------------------------------------------------------- gap detection
    def check_gaps(self, now: float | None = None) -> list[tuple[str, int, int]]:
        """Ask for a resend of each box's first lasting hole; save watermarks; return requests.

        Args:
            now: Monotonic time in seconds; now by default.

        Returns:
            The requests made now, as (box, from_seq, to_seq).
        """
        now = time.monotonic() if now is None else now
        asks: list[tuple[str, int, int]] = []
        dirty: list[tuple[str, int, int]] = []
        try:
            with self._db_lock:
                retired = schema.retired_boxes(self._db)
        except sqlite3.Error:
            log.exception("could not read the retired boxes")
            retired = set()
        with self._lock:
            for box in retired:  # a retired box is asked for nothing again
                self._tracks.pop(box, None)
            for box, track in self._tracks.items():
                if track.dirty:
                    track.dirty = False
                    dirty.append((box, track.contig, track.lost))
                gap = track.gap()
                if gap is None:
                    track.gap_since = None
                    continue
                if track.gap_since is None:
                    track.gap_since = now
                if now - track.gap_since < GAP_GRACE_S:
                    continue
                if track.asked_from == gap[0] and now - track.asked_ts < RESEND_RETRY_S:
                    continue
                track.asked_from, track.asked_ts = gap[0], now
                asks.append((box, *gap))
            self.resend_requests += len(asks)
        if dirty:
            try:
                with self._db_lock, self._db.conn:
                    for box, contig, lost in dirty:
                        store.save_seq_state(self._db, box, contig, lost)
            except Exception:
                log.exception("could not save sequence watermarks")
        for box, first, last in asks:
            self.requests.append((box, first, last))
            log.info("box %s: asking for a resend of seq %d..%d", box, first, last)
            client = self._client
            if client is None:  # paho queues it while reconnecting
                continue
            try:
                self._send_cmd(client, wire.cmd_message(self.site, box, "resend", time.time(),
                                                        from_seq=first, to_seq=last))
            except wire.WireError as exc:  # one box's bad state must not keep the others waiting
                log.error("box %s: no resend of seq %d..%d: %s", box, first, last, exc)
        return asks

    def check_seats(self, now: float | None = None) -> list[tuple[str, float]]:
        """Tell each online box whose seat changed hands after its baselines were learned to
        forget them; return the (box, changed_ts) sent now.

        Args:
            now: Monotonic time in seconds; now by default.
        """
        now = time.monotonic() if now is None else now
        try:
            with self._db_lock:
                stale = self._db.conn.execute(
                    "SELECT s.box, s.changed_ts FROM seats s JOIN boxes b ON b.box = s.box "
                    "WHERE b.state = 'online' AND s.changed_ts > b.baselines_ts").fetchall()
        except sqlite3.Error:
            log.exception("could not read the seat changes")
            return []
        client = self._client
        sent = []
        for box, changed_ts in stale:
            if client is None or now - self._forget_asked.get(box, -math.inf) < RESEND_RETRY_S:
                continue
            self._forget_asked[box] = now
            try:
                msg = wire.cmd_message(self.site, box, "forget_baselines", float(changed_ts))
            except wire.WireError as exc:
                log.error("box %s: no forget_baselines: %s", box, exc)
                continue
            log.info("box %s: its seat changed hands; asking it to forget its baselines", box)
            self._send_cmd(client, msg)
            sent.append((box, float(changed_ts)))
        self.forget_requests += len(sent)
        return sent

    def _send_cmd(self, client: Any, msg: dict[str, Any]) -> bool:
        info = client.publish(wire.topic(self.site, msg["box"], wire.CMD_KIND),
                              wire.encode(wire.CMD_KIND, msg), qos=1)
        return bool(info.rc == 0)

    def publish_cmd(self, box: str, action: str, **extra: Any) -> bool:
        """Send one validated command to ``box`` (QoS 1); return False when not connected.

        Args:
            box: the box id on this site.
            action: a :data:`miroir.wire.CMD_ACTIONS` value.
            **extra: the action's fields (``from_seq``, ``to_seq``, ``call_state``).

        Returns:
            True if the command was handed to the connected MQTT client.
        """
        msg = wire.cmd_message(self.site, box, action, time.time(), **extra)
        client = self._client
        if client is None or not self.connected.is_set():
            log.warning("not connected to the broker: %s not sent to box %s", action, box)
            return False
        return self._send_cmd(client, msg)

    def _check_loop(self) -> None:
        while not self._stop_checker.wait(GAP_CHECK_EVERY_S):
            try:
                self.check_gaps()
                self.check_seats()
            except Exception:
                log.exception("gap check failed")
            try:
                self.roll_counts()
            except Exception:
                log.exception("could not store the boxes' message rates")
            self._late_lines.flush()

    def gaps(self) -> dict[str, tuple[int, int]]:
        """Boxes whose sequence has a hole now, with the first hole (from_seq, to_seq)."""
        with self._lock:
            return {b: g for b, t in self._tracks.items() if (g := t.gap()) is not None}

    # ------------------------------------------------------------------ paho callbacks
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            log.error("broker refused the dashboard: %s", reason_code)
            return
        with self._lock:
            self.connects += 1
        log.info("connected to broker (session present: %s)", flags.session_present)
        try:
            self.broker_cert_not_after_ts = certs.peer_not_after_ts(client.socket())
        except ValueError as exc:
            log.warning("cannot read the broker's certificate: %s", exc)
        client.subscribe([(f, 1) for f in wire.site_filters(self.site)])
        self.connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        self.connected.clear()
        # Acknowledgements the writer decides from now on are dropped; one decided before goes
        # out before paho's reconnection, at least a second later, which discards its queue.
        self._connection += 1
        log.info("disconnected from broker: %s", reason_code)

    def _count(self, topic: str) -> None:
        """Count one message of the box its topic names (the broker's ACL makes it that box's)."""
        parts = topic.split("/")
        if len(parts) == 5 and parts[2] == self.site and wire.ID_PATTERN.fullmatch(parts[3]):
            with self._lock:
                self._box_counts[parts[3]] += 1

    def roll_counts(self, now: float | None = None) -> dict[str, int] | None:
        """Once :data:`RATE_WINDOW_S` has passed, store each box's messages per minute over the
        window (the boxes that sent nothing: 0) and start a new one; return them, else None.

        Args:
            now: Monotonic time in seconds; now by default.
        """
        now = time.monotonic() if now is None else now
        elapsed_s = now - self._window_start
        if elapsed_s < RATE_WINDOW_S:
            return None
        with self._lock:
            counts, self._box_counts = self._box_counts, Counter()
            self._window_start = now
        per_min = {box: round(n * 60.0 / elapsed_s) for box, n in counts.items()}
        with self._db_lock, self._db.conn:
            store.save_message_rates(self._db, self.site, per_min)
        return per_min

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self._count(str(message.topic))
        late_s = status_late_s(str(message.topic), bool(message.retain),
                               getattr(message, "properties", None))
        if self._writer is None:  # not started (tests): handle at once
            try:
                self.handle(message.topic, message.payload, bool(message.retain), late_s)
            except Exception:  # handle() never raises; belt and braces for paho's thread
                log.exception("unexpected error in on_message")
            return
        self._queue.put((client, self._connection, str(message.topic), bytes(message.payload),
                         message.mid, message.qos, bool(message.retain), late_s))

    def _write_loop(self) -> None:
        """Commit what arrived in batches, then acknowledge it (PUBACK after the commit)."""
        while True:
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._stop_writer.is_set():
                    return
                continue
            batch = [first]
            while len(batch) < BATCH_MAX:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            todo = [(topic, payload) for _, _, topic, payload, _, _, _, _ in batch]
            flags = [retain for *_, retain, _ in batch]
            lates = [late_s for *_, late_s in batch]
            while todo:
                try:
                    self.handle_batch(todo, {i for i, retain in enumerate(flags) if retain},
                                      {i: s for i, s in enumerate(lates) if s})
                except StoreUnavailable as exc:  # valid messages: keep them, acknowledge nothing
                    self.store_retries += 1
                    todo = [todo[i] for i in exc.valid]
                    flags = [flags[i] for i in exc.valid]
                    lates = [lates[i] for i in exc.valid]
                    log.warning("database unavailable (%s): %d message(s) wait, unacknowledged",
                                exc, len(todo))
                    if self._stop_writer.wait(STORE_RETRY_S):
                        return  # unacknowledged: the broker delivers them again to the next run
                    continue
                except Exception:  # keep the writer alive regardless
                    log.exception("unexpected error in the ingest writer")
                break
            stale = 0
            for client, connection, _, _, mid, qos, _, _ in batch:
                if qos == 0:
                    continue
                if connection != self._connection:  # its id may name a new message now
                    stale += 1
                    continue
                client.ack(mid, qos)
            if stale:
                with self._lock:
                    self.stale_acks += stale
                log.info("%d message(s) stored after their connection to the broker ended: not "
                         "acknowledged (their packet ids may name new messages now)", stale)

    # ---------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Connect to the broker (TLS, persistent session) and start paho's network thread."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        s = self.settings
        if s.mqtt_ca is None or s.mqtt_cert is None or s.mqtt_key is None:
            raise ValueError("mqtt_ca, mqtt_cert and mqtt_key are required to start the ingest")
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id_for(self.site),
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        client.tls_set(ca_certs=str(s.mqtt_ca), certfile=str(s.mqtt_cert),
                       keyfile=str(s.mqtt_key), cert_reqs=ssl.CERT_REQUIRED,
                       tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        self._client = client
        client.connect_async(s.mqtt_host, s.mqtt_port, keepalive=30, clean_start=False,
                             properties=props)
        self._stop_writer.clear()
        self._writer = threading.Thread(target=self._write_loop, name="ingest-writer",
                                        daemon=True)
        self._writer.start()
        client.loop_start()
        self._stop_checker.clear()
        self._checker = threading.Thread(target=self._check_loop, name="ingest-gaps",
                                         daemon=True)
        self._checker.start()

    def wait_connected(self, timeout_s: float = 10.0) -> bool:
        """Block until subscribed to the broker or ``timeout_s`` passes; return success."""
        return self.connected.wait(timeout_s)

    def stop(self) -> None:
        """Disconnect (the broker keeps the session) and stop paho's thread."""
        self._stop_checker.set()
        if self._checker is not None:
            self._checker.join()
            self._checker = None
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
        self._stop_writer.set()
        if self._writer is not None:
            self._writer.join()  # commits what was received; the broker resends the unacked
            self._writer = None
        self.connected.clear()
        self._late_lines.flush(force=True)

    def close(self) -> None:
        """Stop and close the database connection."""
        self.stop()
        self.check_gaps()  # save the watermarks
        with self._db_lock:
            self._db.conn.close()

    def stats(self) -> dict[str, Any]:
        """Counters, ingest lag percentiles (ms, box clock to reception) and boxes seen."""
        with self._lock:
            lags = list(self._lags_ms)
            out: dict[str, Any] = {
                "connected": self.connected.is_set(),
                "connects": self.connects,
                "received": self.received,
                "inserted": self.inserted,
                "duplicates": self.duplicates,
                "quarantined": self.quarantined,
                "store_retries": self.store_retries,
                "notify_errors": self.notify_errors,
                "boxes_seen": len(self._boxes_seen),
                "resend_requests": self.resend_requests,
                "lost": self.lost,
                "retired_refused": self.retired_refused,
                "late_statuses": self.late_statuses,
                "stale_acks": self.stale_acks,
                "gaps": sum(1 for t in self._tracks.values() if t.gap() is not None),
            }
        out["lag_ms_p50"] = percentile(lags, 50)
        out["lag_ms_p95"] = percentile(lags, 95)
        out["lag_ms_p99"] = percentile(lags, 99)
        out["lag_samples"] = len(lags)
        return out

"""Fleet health for site IT: each box's problems ranked by severity, and offline alerts.

Every box reports its health in its retained ``status`` (software version, certificate expiry,
outbox depth, dropped messages, audio overruns, capture state, CPU temperature and throttling,
clock synchronisation). This module turns the stored status into problems and keeps a history
of offline alerts: a box is offline when its status says so (its Last Will, published by the
broker when the connection drops) or when nothing came from it for :data:`SILENT_AFTER_S`. A box
whose clean stop said it restarts (``restart``: an update, a settings reload) is *restarting*, not
offline, for a grace period (``restart_grace_s``, :data:`RESTART_GRACE_S` by default): a planned
restart raises no alert unless the box is not back by then (the alert is then dated from its stop).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from miroir.versions import version_key  # the order the boxes' updates use
from miroir.wire import DAY_S

log = logging.getLogger(__name__)

STATUS_PERIOD_S = 10.0
"""How often a box republishes its status (``edge.box.STATUS_EVERY_S``)."""
SILENT_AFTER_S = 3 * STATUS_PERIOD_S
"""A box that sent nothing for this long is offline, whatever its last status said."""
CERT_WARN_DAYS = 30.0
"""A certificate that ends within this many days is flagged on the IT page (time to renew or rotate)."""
OUTBOX_HIGH = 1000
CPU_HOT_C = 80.0
CLOCK_OFFSET_MAX_MS = 500.0
"""A box whose clock is off the dashboard's by more than this is flagged on the IT page (the times
of its messages and commands read across the two clocks; docs/wire.md, ``cmd_refused``)."""
MSGS_PER_MIN_HIGH = 1200
"""More messages than this in a minute from one box is a flood (a box sends about 60 metrics
and some tens of events a minute): it delays every other box's messages."""
OVERRUNS_RISING_S = 600.0
"""Audio overruns count as rising if the box's counter went up within this window (s)."""
ALERT_CHECK_S = 2.0
"""Period of the offline-alert evaluation in the running dashboard (s)."""
RESTART_GRACE_S = 120.0
"""Default time a box that said it restarts has to come back before it is alerted (s)."""

SEVERITY = {
    "offline": 100, "never_seen": 95, "cert_expired": 90, "flood": 80, "capture": 70, "cert_expiring": 60,
    "update": 58, "settings": 55, "outbox": 50, "dropped": 45, "fields": 42, "overruns": 40,
    "clock": 35, "thermal": 30, "affect": 20, "restarting": 15, "version": 10,
}
"""Problem codes from the most to the least urgent."""


@dataclass(frozen=True)
class Problem:
    """One problem of a box: its code (see :data:`SEVERITY`) and a short detail."""

    code: str
    detail: str = ""

    @property
    def severity(self) -> int:
        """Rank of the problem (higher is more urgent)."""
        return SEVERITY[self.code]


def common_version(versions: list[str]) -> str | None:
    """The most common version (the newest among equally common ones), None when none."""
    counts = Counter(v for v in versions if v)
    if not counts:
        return None
    return max(counts, key=lambda v: (counts[v], version_key(v)))


def is_offline(box: dict[str, Any], now: float) -> bool:
    """True if the box's status says offline or it has been silent for :data:`SILENT_AFTER_S`."""
    seen = box.get("last_seen_ts")
    return box.get("state") == "offline" or seen is None or now - float(seen) > SILENT_AFTER_S


def restarting_until(box: dict[str, Any], grace_s: float = RESTART_GRACE_S) -> float | None:
    """Until when (the dashboard's clock, s) the box is restarting, not offline: ``grace_s`` after
    its last status if that is the stop of a planned restart, else None."""
    seen = box.get("last_seen_ts")
    if box.get("state") != "offline" or not box.get("restart") or seen is None:
        return None
    return float(seen) + grace_s


def is_restarting(box: dict[str, Any], now: float, grace_s: float = RESTART_GRACE_S) -> bool:
    """True if the box's last status is the stop of a planned restart, at most ``grace_s`` ago."""
    until = restarting_until(box, grace_s)
    return until is not None and now <= until


def cert_days_now(box: dict[str, Any], now: float) -> float | None:
    """Days left on the box's certificate now (its last report aged by the time since)."""
    days = box.get("cert_days_left")
    if days is None:
        return None
    reported = box.get("last_status_ts") or now
    return float(days) - max(0.0, now - float(reported)) / DAY_S


def problems(box: dict[str, Any], now: float, fleet_version: str | None,
             restart_grace_s: float = RESTART_GRACE_S) -> list[Problem]:
    """The problems of one box row, most urgent first.

    Args:
        box: A ``boxes`` row (``last_seen_ts`` None for a provisioned box never seen).
        now: Wall-clock seconds since the epoch.
        fleet_version: The fleet's most common software version.
        restart_grace_s: How long a box that said it restarts is shown restarting, not offline.

    Returns:
        The problems, sorted by decreasing severity.
    """
    out: list[Problem] = []
    if box.get("last_seen_ts") is None:
        out.append(Problem("never_seen"))
    elif is_restarting(box, now, restart_grace_s):
        out.append(Problem("restarting", str(box["restart"])))
    elif is_offline(box, now):
        out.append(Problem("offline"))
    days = cert_days_now(box, now)
    if days is not None and days <= 0:
        out.append(Problem("cert_expired", f"{days:.0f}"))
    elif days is not None and days < CERT_WARN_DAYS:
        out.append(Problem("cert_expiring", f"{days:.0f}"))
    if (box.get("msgs_per_min") or 0) > MSGS_PER_MIN_HIGH:
        out.append(Problem("flood", str(box["msgs_per_min"])))
    if box.get("capture_ok") is not None and not box["capture_ok"]:
        out.append(Problem("capture", box.get("capture_error") or ""))
    if box.get("update_rolled_back"):  # the release named failed its check: the previous runs
        out.append(Problem("update", box["update_rolled_back"]))
    if box.get("settings_error"):
        out.append(Problem("settings", box["settings_error"]))
    if box.get("prospect_affect_state") in ("blocked", "failed"):
        out.append(Problem("affect", box["prospect_affect_state"]))
    if (box.get("outbox_depth") or 0) > OUTBOX_HIGH:
        out.append(Problem("outbox", str(box["outbox_depth"])))
    if (box.get("dropped") or 0) > 0:
        out.append(Problem("dropped", str(box["dropped"])))
    if (box.get("fields_dropped") or 0) > 0:  # a bug on the box: numbers out of their range
        out.append(Problem("fields", str(box["fields_dropped"])))
    rise = box.get("overruns_rise_ts")
    if rise is not None and now - float(rise) <= OVERRUNS_RISING_S and (box.get("overruns") or 0):
        out.append(Problem("overruns", str(box["overruns"])))
    offset = box.get("clock_offset_ms")
    if box.get("clock_shared"):  # the server's own clock (a demo box): named, not the box's
        pass
    elif box.get("clock_synced") is not None and not box["clock_synced"]:
        out.append(Problem("clock", "" if offset is None else f"{offset:+.0f} ms"))
    elif offset is not None and abs(float(offset)) > CLOCK_OFFSET_MAX_MS:
        out.append(Problem("clock", f"{offset:+.0f} ms"))
    temp = box.get("cpu_temp_c")
    if box.get("throttled") or (temp is not None and float(temp) > CPU_HOT_C):
        out.append(Problem("thermal", "" if temp is None else f"{float(temp):.0f} °C"))
    version = box.get("version")
    if fleet_version and version and version != fleet_version:
        out.append(Problem("version", f"{version} ≠ {fleet_version}"))
    return sorted(out, key=lambda p: -p.severity)


_NOT_RETIRED = "b.box NOT IN (SELECT box FROM retired_boxes)"
"""Condition on a ``boxes`` row ``b``: the box is not retired (``miroir dashboard retire``)."""
_FLEET_COLUMNS = ("box", "site", "state", "last_status_ts", "last_seen_ts", "version",
                  "outbox_depth", "dropped", "overruns", "overruns_rise_ts", "capture_ok",
                  "capture_reopens", "capture_error", "settings_error", "prospect_affect_state",
                  "cert_days_left", "cpu_temp_c", "throttled", "clock_synced", "clock_offset_ms",
                  "clock_shared", "msgs_per_min", "fields_dropped", "update_rolled_back",
                  "restart")


def fleet(db: sqlite_utils.Database, now: float | None = None,
          restart_grace_s: float = RESTART_GRACE_S) -> dict[str, Any]:
    """Every box (seen or only provisioned, not retired) with its seat and problems, worst first.

    Returns:
        ``{"now", "common_version", "boxes": [...], "counts": {code: n}}``; each box has
        ``box``, ``seat``, ``state``, ``offline``, ``restarting`` (a planned restart within
        ``restart_grace_s``: not offline), ``last_seen_ts``, ``since_ts`` (when the open
        offline alert started, or when the restart began), the health fields and ``problems``
        (dicts with ``code``, ``detail``, ``severity``).
    """
    now = time.time() if now is None else now
    cols = ", ".join(f"b.{c}" for c in _FLEET_COLUMNS)
    cur = db.conn.execute(f"SELECT {cols}, s.label FROM boxes b LEFT JOIN seats s "
                          f"ON s.box = b.box WHERE {_NOT_RETIRED}")
    rows = [{**dict(zip(_FLEET_COLUMNS, r[:-1], strict=True)), "seat": r[-1]}
            for r in cur.fetchall()]
    seen = {r["box"] for r in rows}
    for box, label in db.conn.execute("SELECT box, label FROM seats").fetchall():
        if box not in seen:
            rows.append({**dict.fromkeys(_FLEET_COLUMNS), "box": box, "seat": label})
    since = dict(db.conn.execute("SELECT box, min(since_ts) FROM alerts WHERE cleared_ts IS NULL "
                                 "GROUP BY box").fetchall())
    version = common_version([r["version"] for r in rows if r["version"]])
    counts: Counter[str] = Counter()
    for r in rows:
        for flag in ("capture_ok", "throttled", "clock_synced", "clock_shared"):
            if r[flag] is not None:
                r[flag] = bool(r[flag])
        found = problems(r, now, version, restart_grace_s)
        r["problems"] = [{"code": p.code, "detail": p.detail, "severity": p.severity}
                         for p in found]
        r["restarting"] = is_restarting(r, now, restart_grace_s)
        r["offline"] = r["last_seen_ts"] is None or (is_offline(r, now) and not r["restarting"])
        r["since_ts"] = (since.get(r["box"]) or r["last_seen_ts"]) if r["offline"] else \
            r["last_seen_ts"] if r["restarting"] else None
        r["cert_days_now"] = cert_days_now(r, now)
        counts.update(p.code for p in found)
    rows.sort(key=lambda r: (-max((p["severity"] for p in r["problems"]), default=0),
                             -len(r["problems"]), r["box"]))
    return {"now": now, "common_version": version, "boxes": rows, "counts": dict(counts)}


# ------------------------------------------------------------------------------ alerts
def evaluate_alerts(db: sqlite_utils.Database, now: float | None = None,
                    restart_grace_s: float = RESTART_GRACE_S) -> tuple[list[str], list[str]]:
    """Raise an offline alert for each box gone offline, clear those back; return both lists.

    Only boxes that have been seen can go offline (a provisioned box never seen is listed on
    the IT page, not alerted); a retired box raises none (its open alert was closed then). A
    box whose stop said it restarts is alerted only once ``restart_grace_s`` has passed without
    it back (reason ``restart``, since its stop). The history is kept in the ``alerts`` table:
    a row per episode, ``cleared_ts`` set once when the box comes back (or is retired).

    Args:
        db: The open database (schema ensured).
        now: Wall-clock seconds since the epoch.
        restart_grace_s: Time a box that said it restarts has to come back.

    Returns:
        (boxes whose alert was raised now, boxes whose alert was cleared now).
    """
    now = time.time() if now is None else now
    rows = db.conn.execute("SELECT box, state, last_seen_ts, restart FROM boxes b "
                           f"WHERE last_seen_ts IS NOT NULL AND {_NOT_RETIRED}").fetchall()
    offline: dict[str, tuple[str, float]] = {}
    for box, state, seen, restart in rows:
        if state == "offline" and restart:  # a planned restart: only if it is not back in time
            if now - float(seen) > restart_grace_s:
                offline[box] = ("restart", float(seen))
        elif state == "offline":  # its Last Will (or a clean stop): seen when it arrived
            offline[box] = ("status", float(seen))
        elif now - float(seen) > SILENT_AFTER_S:
            offline[box] = ("silent", float(seen))
    open_ = {r[0] for r in db.conn.execute(
        "SELECT box FROM alerts WHERE kind = 'offline' AND cleared_ts IS NULL").fetchall()}
    raised = sorted(set(offline) - open_)
    cleared = sorted(open_ - set(offline))
    if raised or cleared:
        with db.conn:
            for box in raised:
                reason, since = offline[box]
                db.conn.execute("INSERT INTO alerts (box, kind, reason, since_ts, raised_ts) "
                                "VALUES (?, 'offline', ?, ?, ?)", (box, reason, since, now))
            for box in cleared:
                db.conn.execute("UPDATE alerts SET cleared_ts = ? WHERE box = ? AND "
                                "kind = 'offline' AND cleared_ts IS NULL", (now, box))
        for box in raised:
            log.warning("box %s is offline (%s)", box, offline[box][0])
        for box in cleared:
            log.info("box %s is back online", box)
    return raised, cleared


def active_alerts(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Open alerts, oldest first, with the box's seat label."""
    return list(db.query(
        "SELECT a.*, s.label AS seat FROM alerts a LEFT JOIN seats s ON s.box = a.box "
        "WHERE a.cleared_ts IS NULL ORDER BY a.raised_ts, a.box"))


def alert_history(db: sqlite_utils.Database, limit: int = 100) -> list[dict[str, Any]]:
    """The latest alerts (open or cleared), newest first."""
    return list(db.query(
        "SELECT a.*, s.label AS seat FROM alerts a LEFT JOIN seats s ON s.box = a.box "
        "ORDER BY a.id DESC LIMIT ?", [limit]))


def alert_counts(db: sqlite_utils.Database) -> tuple[int, int]:
    """(open alerts, alerts raised ever kept in the history)."""
    row = db.conn.execute("SELECT count(*) - count(cleared_ts), count(*) FROM alerts").fetchone()
    return int(row[0] or 0), int(row[1] or 0)

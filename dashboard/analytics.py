"""Queries over an agent's metrics: rows by seat history, daily means, baselines, variants."""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import sqlite_utils

from . import registry

DAY_S = 86400.0
OUTCOMES = ("meeting", "callback", "refusal", "no_answer")
SUCCESS_OUTCOME = "meeting"


def metric_names(db: sqlite_utils.Database) -> list[str]:
    """Known metric columns present in the ``metrics`` table (what the boxes publish)."""
    cols = [r[1] for r in db.conn.execute("PRAGMA table_info(metrics)").fetchall()]
    return registry.metric_columns(cols)


def _windows_sql(alias: str = "m") -> str:
    return (f"JOIN seat_history h ON {alias}.box = h.box AND {alias}.ts >= h.from_ts "
            f"AND (h.to_ts IS NULL OR {alias}.ts < h.to_ts)")


MAX_METRIC_ROWS = 20000
"""Rows of one agent's metrics the API answers at most (5.6 h of one-second rows): the newest."""


def agent_metrics(db: sqlite_utils.Database, agent: str, since_ts: float = 0.0,
                  until_ts: float | None = None,
                  limit: int = MAX_METRIC_ROWS) -> list[dict[str, Any]]:
    """The agent's newest ``limit`` metrics rows in the window (the boxes they sat at, while
    they sat there), oldest first: a window with more rows loses its oldest, never its newest."""
    names = metric_names(db)
    cols = ", ".join(["m.box", "m.seq", "m.ts", "m.talk_state",
                      *(f"m.{n}" for n in names)])
    until = time.time() + DAY_S if until_ts is None else until_ts
    cur = db.conn.execute(
        f"SELECT {cols} FROM metrics m {_windows_sql()} WHERE h.agent = ? AND m.ts >= ? "
        f"AND m.ts < ? ORDER BY m.ts DESC LIMIT ?", (agent, since_ts, until, limit))
    keys = [c[0] for c in cur.description]
    return [dict(zip(keys, r, strict=True)) for r in reversed(cur.fetchall())]


def iter_agent_metrics(db: sqlite_utils.Database, agent: str, since_ts: float = 0.0,
                       batch: int = 1000) -> Iterator[dict[str, Any]]:
    """Every metrics row of the agent since ``since_ts``, oldest first, as
    :func:`agent_metrics` without its limit: read ``batch`` rows at a time (exports)."""
    names = metric_names(db)
    cols = ", ".join(["m.box", "m.seq", "m.ts", "m.talk_state", *(f"m.{n}" for n in names)])
    cur = db.conn.execute(
        f"SELECT {cols} FROM metrics m {_windows_sql()} WHERE h.agent = ? AND m.ts >= ? "
        f"AND m.ts < ? ORDER BY m.ts", (agent, since_ts, time.time() + DAY_S))
    yield from _iter_rows(cur, batch)


def _iter_rows(cur: sqlite3.Cursor, batch: int) -> Iterator[dict[str, Any]]:
    keys = [c[0] for c in cur.description]
    while rows := cur.fetchmany(batch):
        for r in rows:
            yield dict(zip(keys, r, strict=True))


def agent_events(db: sqlite_utils.Database, agent: str, since_ts: float = 0.0,
                 cues_only: bool = True, limit: int = 5000) -> list[dict[str, Any]]:
    """The agent's events, oldest first; with ``cues_only``, the cues raised (each ``cue_on``,
    named by its cue id)."""
    return list(iter_agent_events(db, agent, since_ts, cues_only, limit))


def iter_agent_events(db: sqlite_utils.Database, agent: str, since_ts: float = 0.0,
                      cues_only: bool = True, limit: int | None = None,
                      batch: int = 1000) -> Iterator[dict[str, Any]]:
    """:func:`agent_events` read ``batch`` rows at a time, all of them without ``limit``."""
    cues = "AND e.name = 'cue_on' AND e.cue IS NOT NULL " if cues_only else ""
    sql = (f"SELECT e.box, e.seq, e.ts, e.name, e.channel, e.cue FROM events e "
           f"{_windows_sql('e')} WHERE h.agent = ? AND e.ts >= ? {cues}ORDER BY e.ts")
    args: tuple[Any, ...] = (agent, since_ts)
    if limit is not None:
        sql += " LIMIT ?"
        args += (limit,)
    for r in _iter_rows(db.conn.execute(sql, args), batch):
        cue = r.pop("cue")
        if cues_only:
            r["name"] = cue
        elif cue is not None:
            r["cue"] = cue
        yield r


DAY_START_KEY = "day_start_utc_h"
"""``app_settings`` key of :attr:`DashboardSettings.day_start_utc_h`, stored by the app at start
(:func:`store_day_start`), so that the purge and the pages cut days at the same hour."""


def store_day_start(db: sqlite_utils.Database, hours_utc: float) -> None:
    """Record the hour (UTC) at which a day of the daily means begins."""
    with db.conn:
        db.conn.execute("INSERT INTO app_settings (key, value) VALUES (?, ?) ON CONFLICT(key) "
                        "DO UPDATE SET value = excluded.value", (DAY_START_KEY, repr(hours_utc)))


def day_start_s(db: sqlite_utils.Database) -> float:
    """Seconds after midnight UTC at which a day of the daily means begins (0 until stored)."""
    row = db.conn.execute("SELECT value FROM app_settings WHERE key = ?",
                          (DAY_START_KEY,)).fetchone()
    return 3600.0 * float(row[0]) if row else 0.0


def _day(ts: float, start_s: float = 0.0) -> str:
    """The day ``ts`` belongs to: the UTC date of ``ts`` less the day's start."""
    return time.strftime("%Y-%m-%d", time.gmtime(ts - start_s))


def roll_up(db: sqlite_utils.Database, before_ts: float) -> int:
    """Store daily per-agent means of every metric for rows older than ``before_ts``.

    Called by the purge before per-second rows are deleted, so day-level trends (goals, team
    board) outlive them. A day already rolled up in part (the purge runs hourly) gets the new
    rows added to its mean, weighted by their counts. Returns the number of (day, agent, metric)
    rows written.
    """
    names = metric_names(db)
    start = day_start_s(db)
    written = 0
    for name in names:
        cur = db.conn.execute(
            f"SELECT date(m.ts - ?, 'unixepoch') AS day, h.agent, avg(m.{name}), count(m.{name}) "
            f"FROM metrics m {_windows_sql()} WHERE m.ts < ? AND m.{name} IS NOT NULL "
            f"GROUP BY day, h.agent", (start, before_ts))
        for day, agent, mean, n in cur.fetchall():
            db.conn.execute(
                "INSERT INTO daily_aggregates (day, agent, metric, mean, n) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(day, agent, metric) DO UPDATE SET n = n + excluded.n, mean = "
                "(mean * n + excluded.mean * excluded.n) / (n + excluded.n)",
                (day, agent, name, mean, n))
            written += 1
    return written


def daily_means(db: sqlite_utils.Database, agent: str, metric: str,
                days: int = 30, now: float | None = None) -> list[tuple[str, float]]:
    """Daily mean of ``metric`` for ``agent`` over the last ``days`` days, oldest first: a day
    the purge rolled up in part is its rolled-up mean and its remaining rows, weighted by count."""
    if metric not in metric_names(db):
        return []
    now = time.time() if now is None else now
    since = now - days * DAY_S
    start = day_start_s(db)
    sums: dict[str, tuple[float, int]] = {}  # day: (sum, count)
    for day, mean, n in db.conn.execute(
            "SELECT day, mean, n FROM daily_aggregates WHERE agent = ? AND metric = ? AND day >= ? "
            "AND mean IS NOT NULL", (agent, metric, _day(since, start))).fetchall():
        sums[day] = (mean * (n or 1), n or 1)
    for day, total, n in db.conn.execute(
            f"SELECT date(m.ts - ?, 'unixepoch') AS day, sum(m.{metric}), count(m.{metric}) "
            f"FROM metrics m {_windows_sql()} WHERE h.agent = ? AND m.ts >= ? "
            f"AND m.{metric} IS NOT NULL GROUP BY day", (start, agent, since)).fetchall():
        before, count = sums.get(day, (0.0, 0))
        sums[day] = (before + total, count + n)
    return sorted((day, total / n) for day, (total, n) in sums.items())


def team_mean(db: sqlite_utils.Database, team: str, metric: str) -> tuple[float | None, int]:
    """Mean of ``metric`` over the team's agent-days, and how many agents are behind it: each
    agent-day is its rolled-up mean and its rows still stored, weighted by count (as
    :func:`daily_means`), so the days past the purge and the recent ones both count."""
    return team_means(db, team).get(metric, (None, 0))


def team_means(db: sqlite_utils.Database, team: str) -> dict[str, tuple[float | None, int]]:
    """:func:`team_mean` of every metric, from one read of the team's rows (not one a metric:
    each read goes through every row the team's boxes sent in the retention period)."""
    names = metric_names(db)
    days: dict[str, dict[tuple[str, str], tuple[float, int]]] = {n: {} for n in names}
    for agent, day, metric, total, n in db.conn.execute(
            "SELECT d.agent, d.day, d.metric, d.mean * coalesce(d.n, 1), coalesce(d.n, 1) "
            "FROM daily_aggregates d JOIN agents a ON a.agent = d.agent WHERE a.team = ? "
            "AND d.mean IS NOT NULL", (team,)):
        if metric in days:
            _add_to_day(days[metric], (agent, day), total, n)
    if names:
        sums = ", ".join(f"sum(m.{n}), count(m.{n})" for n in names)
        for agent, day, *values in db.conn.execute(
                f"SELECT h.agent, date(m.ts - ?, 'unixepoch'), {sums} FROM metrics m "
                f"{_windows_sql()} JOIN agents a ON a.agent = h.agent WHERE a.team = ? "
                f"GROUP BY h.agent, 2", (day_start_s(db), team)):
            for name, total, n in zip(names, values[::2], values[1::2], strict=True):
                if n:
                    _add_to_day(days[name], (agent, day), total, n)
    out: dict[str, tuple[float | None, int]] = {}
    for name, groups in days.items():
        means = [total / n for total, n in groups.values()]
        out[name] = (sum(means) / len(means) if means else None, len({a for a, _ in groups}))
    return out


def _add_to_day(days: dict[tuple[str, str], tuple[float, int]], key: tuple[str, str],
                total: float, n: int) -> None:
    before, count = days.get(key, (0.0, 0))
    days[key] = (before + total, count + n)


def progress(series: list[tuple[str, float]], better: str) -> float | None:
    """Improvement of the latest day against the agent's own baseline (mean of earlier days).

    Returns a signed fraction (positive = better in the goal's direction), None without a
    baseline.
    """
    if len(series) < 2:
        return None
    baseline = sum(v for _, v in series[:-1]) / (len(series) - 1)
    latest = series[-1][1]
    if baseline == 0:
        return None
    change = (latest - baseline) / abs(baseline)
    return -change if better == "down" else change


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float, float]:
    """Rate and Wilson score interval (95 % by default) of ``successes`` out of ``n``."""
    if n <= 0:
        return 0.0, 0.0, 0.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return p, max(0.0, centre - half), min(1.0, centre + half)


def variant_comparison(db: sqlite_utils.Database, campaign: str,
                       agents: list[str] | None) -> list[dict[str, Any]]:
    """Per variant: calls tagged, outcome counts, meeting rate with its Wilson interval (None
    for all three while no call of the variant has an outcome: nothing is known of its rate)."""
    variants = list(db.query("SELECT id, name, text FROM variants WHERE campaign = ? ORDER BY id",
                             [campaign]))
    out = []
    for v in variants:
        sql = "SELECT outcome, count(*) FROM calls WHERE campaign = ? AND variant = ? " \
              "AND outcome IS NOT NULL"
        args: list[Any] = [campaign, v["id"]]
        if agents is not None:
            sql += f" AND agent IN ({','.join('?' for _ in agents)})"
            args += agents
        counts = dict.fromkeys(OUTCOMES, 0)
        for outcome, n in db.conn.execute(sql + " GROUP BY outcome", args).fetchall():
            counts[outcome] = n
        n = sum(counts.values())
        rate, lo, hi = wilson(counts[SUCCESS_OUTCOME], n) if n else (None, None, None)
        out.append({"variant": v["id"], "name": v["name"], "text": v["text"], "calls": n,
                    "outcomes": counts, "rate": rate, "ci_low": lo, "ci_high": hi})
    return out

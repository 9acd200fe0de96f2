"""Queries over an agent's metrics: rows by seat history, daily means, baselines, variants."""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import sqlite_utils

from miroir.wire import DAY_S

from . import db as store
from . import registry

log = logging.getLogger(__name__)

OUTCOMES = ("meeting", "callback", "refusal", "no_answer")
SUCCESS_OUTCOME = "meeting"


def _metrics_columns(db: sqlite_utils.Database) -> list[str]:
    return [r[1] for r in db.conn.execute("PRAGMA table_info(metrics)").fetchall()]


def metric_names(db: sqlite_utils.Database) -> list[str]:
    """Known metric columns present in the ``metrics`` table (what the boxes publish)."""
    return registry.metric_columns(_metrics_columns(db))


def factor_names(db: sqlite_utils.Database) -> list[str]:
    """The fatigue factors (``registry.FATIGUE_FACTORS``) whose columns the ``metrics`` table has."""
    cols = set(_metrics_columns(db))
    return [f for f in registry.FATIGUE_FACTORS if registry.factor_column(f) in cols]


def _windows_sql(alias: str = "m") -> str:
    return (f"JOIN seat_history h ON {alias}.box = h.box AND {alias}.ts >= h.from_ts "
            f"AND (h.to_ts IS NULL OR {alias}.ts < h.to_ts)")


MAX_METRIC_ROWS = 20000
"""Rows of one agent's metrics the API answers at most (5.6 h of one-second rows): the newest."""


TALK_STATE_COLUMN = f"{store.HELD_TALK_STATE_SQL} AS talk_state"
"""The talk state an agent's rows give (their chart, the exports): the stored one, ``hold`` for
a second whose call was on hold (the talk then is not the call's), the floor timeline's rule."""


def agent_metrics(db: sqlite_utils.Database, agent: str, since_ts: float = 0.0,
                  until_ts: float | None = None,
                  limit: int = MAX_METRIC_ROWS) -> list[dict[str, Any]]:
    """The agent's newest ``limit`` metrics rows in the window (the boxes they sat at, while
    they sat there), oldest first: a window with more rows loses its oldest, never its newest.
    Each row holds the charted metrics, the fatigue factors, each channel's signal state
    (``near_signal``, ``far_signal``: why a channel's metrics are missing) and whether the call
    was on hold (``on_hold``, True or False; None from a box that does not say: why a rolling
    window is missing); ``talk_state`` is ``hold`` for a second on hold, as on the floor's
    timeline (:data:`TALK_STATE_COLUMN`)."""
    names = metric_names(db) + [registry.factor_column(f) for f in factor_names(db)]
    cols = ", ".join(["m.box", "m.seq", "m.ts", TALK_STATE_COLUMN, "m.near_signal", "m.far_signal",
                      "m.on_hold", *(f"m.{n}" for n in names)])
    until = time.time() + DAY_S if until_ts is None else until_ts
    cur = db.conn.execute(
        f"SELECT {cols} FROM metrics m {_windows_sql()} WHERE h.agent = ? AND m.ts >= ? "
        f"AND m.ts < ? ORDER BY m.ts DESC LIMIT ?", (agent, since_ts, until, limit))
    keys = [c[0] for c in cur.description]
    rows = [dict(zip(keys, r, strict=True)) for r in reversed(cur.fetchall())]
    for row in rows:
        if row["on_hold"] is not None:
            row["on_hold"] = bool(row["on_hold"])
    return rows


def iter_agent_metrics(db: sqlite_utils.Database, agent: str, since_ts: float = 0.0,
                       batch: int = 1000) -> Iterator[dict[str, Any]]:
    """Every metrics row of the agent since ``since_ts``, oldest first, as
    :func:`agent_metrics` without its limit (``hold`` for a talk state on hold): read ``batch``
    rows at a time (exports)."""
    names = metric_names(db)
    cols = ", ".join(["m.box", "m.seq", "m.ts", TALK_STATE_COLUMN, *(f"m.{n}" for n in names)])
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
    named by its cue id, with its severity and the evidence that raised it)."""
    return list(iter_agent_events(db, agent, since_ts, cues_only, limit))


def calls_heard(db: sqlite_utils.Database, agent: str, since_ts: float) -> int:
    """The calls the agent's boxes heard start since ``since_ts`` (their ``call_start`` events,
    at the agent's seats then): a site without a phone system feed (CTI) has no other count."""
    return int(db.conn.execute(
        f"SELECT count(*) FROM events e {_windows_sql('e')} WHERE h.agent = ? AND e.ts >= ? "
        "AND e.name = 'call_start'", (agent, since_ts)).fetchone()[0])


def iter_agent_events(db: sqlite_utils.Database, agent: str, since_ts: float = 0.0,
                      cues_only: bool = True, limit: int | None = None,
                      batch: int = 1000) -> Iterator[dict[str, Any]]:
    """:func:`agent_events` read ``batch`` rows at a time, all of them without ``limit``."""
    cues = "AND e.name = 'cue_on' AND e.cue IS NOT NULL " if cues_only else ""
    evidence = (", e.severity, e.evidence_value, e.evidence_threshold, e.evidence_unit"
                if cues_only else "")
    sql = (f"SELECT e.box, e.seq, e.ts, e.name, e.channel, e.cue{evidence} FROM events e "
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


ROLL_UP_BATCH_ROWS = 2000
"""Metrics rows of one box the roll-up adds to the daily means per transaction: the ingest and
the pages wait for one batch at most."""
ROLL_UP_PAUSE_S = 0.02
"""Pause between two batches of the roll-up, so that a waiting writer takes the lock."""
ROLL_UP_PROGRESS_S = 10.0
"""A roll-up that takes longer logs how far it has gone this often (the backlog of a database
never rolled up, or of a server off for weeks, takes minutes)."""
ROLL_UP_SETTLE_S = 60.0
"""How far behind the clock the purge's roll-up stops: a row is stamped with its arrival time
before the ingest's transaction commits it (after up to the 5 s busy timeout), and a row stamped
before a box's mark but committed after it would be in no mean."""


def _unrolled_sql(alias: str = "m") -> str:
    """Join, after ``seat_history h``, of the rows of its windows that no roll-up has added to
    the daily means yet: those ingested since their box's mark (``rolled_up``)."""
    return (f"LEFT JOIN rolled_up r ON r.box = h.box JOIN metrics {alias} ON {alias}.box = h.box "
            f"AND {alias}.ingested_ts >= coalesce(r.before_ts, 0) AND +{alias}.ts >= h.from_ts "
            f"AND (h.to_ts IS NULL OR +{alias}.ts < h.to_ts)")


def roll_up(db: sqlite_utils.Database, before_ts: float) -> int:
    """Add every metrics row ingested before ``before_ts`` to its day's per-agent means.

    Each box's mark (``rolled_up``) says up to which ingestion time its rows are in
    ``daily_aggregates``; the means and counts of later rows are added to the day's, weighted
    by count, :data:`ROLL_UP_BATCH_ROWS` rows of a box per transaction, a log line every
    :data:`ROLL_UP_PROGRESS_S` saying how far it has gone. A row keeps its
    per-second form until the retention purge; a row that arrives late (a box's outbox sent
    after an outage) is added to its own day by the next roll-up. Pages read the stored means
    and only the rows since the mark (:func:`daily_means`, :func:`team_means`). The retention
    purge runs it every hour. Returns the number of rows added.
    """
    boxes = [r[0] for r in db.conn.execute(
        "SELECT box FROM boxes UNION SELECT box FROM seat_history").fetchall()]
    added = 0
    said_ts = time.time()
    for done, box in enumerate(boxes):
        while True:
            with db.conn:
                db.conn.execute("BEGIN IMMEDIATE")  # the mark read and moved in one transaction
                n, end_ts = _roll_up_batch(db, box, before_ts)
            added += n
            if end_ts >= before_ts:
                break
            if time.time() - said_ts >= ROLL_UP_PROGRESS_S:
                said_ts = time.time()
                log.info("daily means under way: %d metrics rows added, %d of %d boxes done",
                         added, done, len(boxes))
            time.sleep(ROLL_UP_PAUSE_S)
    return added


def _roll_up_batch(db: sqlite_utils.Database, box: str, before_ts: float) -> tuple[int, float]:
    """Add the next batch of ``box``'s rows past its mark to the daily means and move the mark
    past them; return the rows added and the new mark."""
    row = db.conn.execute("SELECT before_ts FROM rolled_up WHERE box = ?", (box,)).fetchone()
    start_ts = float(row[0]) if row else 0.0
    if start_ts >= before_ts:
        return 0, start_ts
    nth = db.conn.execute(
        "SELECT ingested_ts FROM metrics WHERE box = ? AND ingested_ts >= ? AND ingested_ts < ? "
        "ORDER BY ingested_ts LIMIT 1 OFFSET ?", (box, start_ts, before_ts, ROLL_UP_BATCH_ROWS)
    ).fetchone()
    end_ts = before_ts if nth is None else float(nth[0])
    if end_ts <= start_ts:  # more rows than a batch arrived at one instant: take them all
        end_ts = math.nextafter(start_ts, math.inf)
    n_rows = _add_to_means(db, "m.box = ? AND m.ingested_ts >= ? AND m.ingested_ts < ?",
                           (box, start_ts, end_ts))
    db.conn.execute("INSERT INTO rolled_up (box, before_ts) VALUES (?, ?) ON CONFLICT(box) "
                    "DO UPDATE SET before_ts = excluded.before_ts", (box, end_ts))
    return n_rows, end_ts


def roll_up_past_marks(db: sqlite_utils.Database, before_ts: float) -> int:
    """Add the rows older than ``before_ts`` that no roll-up has reached (ingested since their
    box's mark) to the daily means: the purge calls it, in the transaction that deletes them.
    Returns the number of rows added."""
    return _add_to_means(db, "m.ts < ? AND m.ingested_ts >= coalesce((SELECT r.before_ts FROM "
                         "rolled_up r WHERE r.box = m.box), 0)", (before_ts,))


def _add_to_means(db: sqlite_utils.Database, where: str, args: tuple[Any, ...]) -> int:
    """Add the metrics rows ``m`` that match ``where`` to their agent's daily means; return
    how many rows were in a seat window."""
    names = metric_names(db)
    sums = ", ".join(f"sum(m.{n}), count(m.{n})" for n in names)
    n_rows = 0
    for day, agent, rows, *values in db.conn.execute(
            f"SELECT date(m.ts - ?, 'unixepoch'), h.agent, count(*), {sums} FROM metrics m "
            f"{_windows_sql()} WHERE {where} GROUP BY 1, 2", (day_start_s(db), *args)).fetchall():
        n_rows += rows
        for name, total, n in zip(names, values[::2], values[1::2], strict=True):
            if n:
                _add_to_aggregate(db, day, agent, name, total / n, n)
    return n_rows


def _add_to_aggregate(db: sqlite_utils.Database, day: str, agent: str, metric: str,
                      mean: float, n: int) -> None:
    """Merge ``n`` rows of mean ``mean`` into the day's stored mean, weighted by count."""
    db.conn.execute(
        "INSERT INTO daily_aggregates (day, agent, metric, mean, n) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT(day, agent, metric) DO UPDATE SET n = n + excluded.n, mean = "
        "(mean * n + excluded.mean * excluded.n) / (n + excluded.n)",
        (day, agent, metric, mean, n))


@contextlib.contextmanager
def _snapshot(db: sqlite_utils.Database) -> Iterator[None]:
    """One read transaction: the stored means and the rows past the marks read at one instant
    (a roll-up committed between the two reads would count its rows twice, or not at all)."""
    if db.conn.in_transaction:
        yield
        return
    db.conn.execute("BEGIN")
    try:
        yield
    finally:
        db.conn.rollback()


def daily_means(db: sqlite_utils.Database, agent: str, metric: str,
                days: int = 30, now: float | None = None) -> list[tuple[str, float]]:
    """Daily mean of ``metric`` for ``agent`` over the last ``days`` days, oldest first: each
    day's stored mean (:func:`roll_up`) and the rows ingested since, weighted by count."""
    if metric not in metric_names(db):
        return []
    now = time.time() if now is None else now
    since = now - days * DAY_S
    start = day_start_s(db)
    sums: dict[str, tuple[float, int]] = {}  # day: (sum, count)
    with _snapshot(db):
        for day, mean, n in db.conn.execute(
                "SELECT day, mean, n FROM daily_aggregates WHERE agent = ? AND metric = ? "
                "AND day >= ? AND mean IS NOT NULL", (agent, metric, _day(since, start))).fetchall():
            sums[day] = (mean * (n or 1), n or 1)
        for day, total, n in db.conn.execute(
                f"SELECT date(m.ts - ?, 'unixepoch') AS day, sum(m.{metric}), count(m.{metric}) "
                f"FROM seat_history h {_unrolled_sql()} WHERE h.agent = ? AND +m.ts >= ? "
                f"AND m.{metric} IS NOT NULL GROUP BY day", (start, agent, since)).fetchall():
            before, count = sums.get(day, (0.0, 0))
            sums[day] = (before + total, count + n)
    return sorted((day, total / n) for day, (total, n) in sums.items())


def team_means(db: sqlite_utils.Database, team: str) -> dict[str, tuple[float | None, int]]:
    """Each metric's mean over the team's agent-days and how many agents are behind it
    (:func:`team_means_by`)."""
    return {name: (mean, len(agents)) for name, (mean, agents) in team_means_by(db, team).items()}


def team_means_by(db: sqlite_utils.Database,
                  team: str) -> dict[str, tuple[float | None, set[str]]]:
    """Each metric's mean over the team's agent-days, and the agents behind it: each
    agent-day is its stored mean (:func:`roll_up`) and, in one read, its rows ingested since its
    box's mark (the last hour's), weighted by count (as :func:`daily_means`), so the days past the
    purge and the recent ones both count, never the per-second rows of the whole retention
    period. Only the metrics whose daily mean means something
    (:func:`registry.daily_mean_meaningful`)."""
    names = [n for n in metric_names(db) if registry.daily_mean_meaningful(n)]
    days: dict[str, dict[tuple[str, str], tuple[float, int]]] = {n: {} for n in names}
    with _snapshot(db):
        for agent, day, metric, total, n in db.conn.execute(
                "SELECT d.agent, d.day, d.metric, d.mean * coalesce(d.n, 1), coalesce(d.n, 1) "
                "FROM agents a JOIN daily_aggregates d ON d.agent = a.agent WHERE a.team = ? "
                "AND d.mean IS NOT NULL", (team,)):
            if metric in days:
                _add_to_day(days[metric], (agent, day), total, n)
        if names:
            sums = ", ".join(f"sum(m.{n}), count(m.{n})" for n in names)
            for agent, day, *values in db.conn.execute(
                    f"SELECT h.agent, date(m.ts - ?, 'unixepoch'), {sums} FROM agents a "
                    f"JOIN seat_history h ON h.agent = a.agent {_unrolled_sql()} "
                    f"WHERE a.team = ? GROUP BY h.agent, 2", (day_start_s(db), team)):
                for name, total, n in zip(names, values[::2], values[1::2], strict=True):
                    if n:
                        _add_to_day(days[name], (agent, day), total, n)
    out: dict[str, tuple[float | None, set[str]]] = {}
    for name, groups in days.items():
        means = [total / n for total, n in groups.values()]
        out[name] = (sum(means) / len(means) if means else None, {a for a, _ in groups})
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


MIN_GROUP_AGENTS = 3
"""Fewest agents behind a figure (a team's mean, a variant's meeting rate) for a reader who may
not see each of them (an auditor sees aggregates, never one agent's data): a smaller group's
figure is withheld ("too few agents"), since the figure of one or two agents is their own data."""


def variant_comparison(db: sqlite_utils.Database, campaign: str, agents: list[str] | None,
                       sees: list[str] | None = None) -> list[dict[str, Any]]:
    """Per variant: calls tagged, outcome counts, meeting rate with its Wilson interval (None
    for all three while no call of the variant has an outcome: nothing is known of its rate),
    and how many agents made those calls.

    Only the calls of ``agents`` count (all without it). A variant whose calls come from fewer
    than :data:`MIN_GROUP_AGENTS` agents, not all of whom the reader may see one by one
    (``sees``; None: all), has its counts and rate withheld (None) and ``withheld`` says why.
    """
    variants = list(db.query("SELECT id, name, text FROM variants WHERE campaign = ? ORDER BY id",
                             [campaign]))
    out = []
    for v in variants:
        sql = "SELECT outcome, agent, count(*) FROM calls WHERE campaign = ? AND variant = ? " \
              "AND outcome IS NOT NULL"
        args: list[Any] = [campaign, v["id"]]
        if agents is not None:
            sql += f" AND agent IN ({','.join('?' for _ in agents)})"
            args += agents
        counts = dict.fromkeys(OUTCOMES, 0)
        behind: set[str] = set()
        for outcome, agent, n in db.conn.execute(sql + " GROUP BY outcome, agent", args):
            counts[outcome] += n
            behind.add(agent)
        n = sum(counts.values())
        if n and len(behind) < MIN_GROUP_AGENTS and sees is not None and not behind <= set(sees):
            out.append({"variant": v["id"], "name": v["name"], "text": v["text"], "calls": None,
                        "outcomes": None, "rate": None, "ci_low": None, "ci_high": None,
                        "agents": len(behind), "withheld": "too few agents"})
            continue
        rate, lo, hi = wilson(counts[SUCCESS_OUTCOME], n) if n else (None, None, None)
        out.append({"variant": v["id"], "name": v["name"], "text": v["text"], "calls": n,
                    "outcomes": counts, "rate": rate, "ci_low": lo, "ci_high": hi,
                    "agents": len(behind), "withheld": None})
    return out


def variant_agents(db: sqlite_utils.Database, campaign: str,
                   agents: list[str] | None) -> dict[int, set[str]]:
    """Per variant of ``campaign``, the agents whose calls with an outcome make its figures in
    :func:`variant_comparison` (only ``agents``'s; all without it)."""
    sql = "SELECT DISTINCT variant, agent FROM calls WHERE campaign = ? AND outcome IS NOT NULL " \
          "AND variant IS NOT NULL"
    args: list[Any] = [campaign]
    if agents is not None:
        sql += f" AND agent IN ({','.join('?' for _ in agents)})"
        args += agents
    out: dict[int, set[str]] = {}
    for variant, agent in db.conn.execute(sql, args):
        out.setdefault(int(variant), set()).add(agent)
    return out
